"""Fault injection for tests: a flaky object store in front of a local S3 server."""
