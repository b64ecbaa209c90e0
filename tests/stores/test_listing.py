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
    infos = store.list_info("many/")  # what converters plan store tars from: size and etag, all pages
    assert len(infos) == KEYS and {i.size for i in infos} == {1}
    store.write_bytes("many/00000", b"yy")
    (rewritten,) = [i for i in store.list_info("many/0000") if i.key == "many/00000"]
    assert rewritten.size == 2 and rewritten.version not in ("", infos[0].version)


@pytest.mark.parametrize("server", ["gcs_bucket", "azure_container"])
def test_listing_with_sizes_and_versions(server: str, request: pytest.FixtureRequest) -> None:
    bucket = request.getfixturevalue(server)
    store, _ = stores.open_store(f"{'gs' if server == 'gcs_bucket' else 'azure'}://{bucket}")
    for name, data in (("sized/a", b"1"), ("sized/b", b"22"), ("other/c", b"333")):
        store.write_bytes(name, data)
    before = {i.key: i for i in store.list_info("sized/")}
    assert {k: i.size for k, i in before.items()} == {"sized/a": 1, "sized/b": 2}
    store.write_bytes("sized/a", b"9")  # same size, new content: a new version
    after = {i.key: i for i in store.list_info("sized/")}
    assert after["sized/a"].version != before["sized/a"].version
    assert after["sized/b"].version == before["sized/b"].version
