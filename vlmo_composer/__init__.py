"""VLMo on Composer and Streaming."""
