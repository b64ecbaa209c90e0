"""The store servers' fixtures (``gcs_bucket``, ``azure_container``, ``s3_bucket``) are in tests/conftest.py,
shared with the data_prep tests that read inputs from a store."""
