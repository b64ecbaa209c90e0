"""Listings follow every page: 1001 keys (S3 answers 1000 per page) all come back (weight-source folders,
data_prep's deletes and group listings use this listing)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from vlmo_composer import stores

KEYS = 1001


@pytest.mark.s3
def test_listing_past_one_page(s3_bucket):
    store, _ = stores.open_store(f"s3://{s3_bucket}/many")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.write_bytes(f"many/{i:05d}", b"x"), range(KEYS)))
    assert len(store.list("many/")) == KEYS
    assert len(store.list("many/", limit=3)) == 3
