"""Conversion straight to s3:// on a real S3-compatible server (moto server mode)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import boto3
import pytest
from prep_helpers import image_bytes, make_coco_like, report_counts, write_tar
from test_prep_web_pairs import make_tars

from data_prep import convert_karpathy, convert_webdataset, make_synthetic
from data_prep.common import ConversionError
from vlmo_composer import stores

pytestmark = pytest.mark.s3


def keys(bucket: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_karpathy_to_s3_matches_local(tmp_path: Path, s3_bucket: str, read_mds) -> None:
    json_path, images = make_coco_like(tmp_path, 12)
    common = ["--dataset", "coco", "--json", str(json_path), "--images", str(images), "--group-size", "4",
              "--no-progress", "--staging-dir", str(tmp_path / "staging")]
    convert_karpathy.main([*common, "--out", str(tmp_path / "local"), "--num-workers", "1"])
    remote = f"s3://{s3_bucket}/mds/coco"
    (report, *_) = convert_karpathy.main([*common, "--out", remote, "--num-workers", "2"])

    assert report.location == f"{remote}/train" and report.samples_written == 10
    assert read_mds(f"{remote}/train") == read_mds(tmp_path / "local" / "train")
    stored = keys(s3_bucket, "mds/coco/train/")
    for name in ("index.json", "conversion_report.json", "conversion_manifest.json", "00000/_SUCCESS",
                 "00002/index.json"):
        assert f"mds/coco/train/{name}" in stored
    assert not any((tmp_path / "staging").iterdir())  # staging copies are removed after upload
    saved = json.loads(boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).get_object(
        Bucket=s3_bucket, Key="mds/coco/train/conversion_report.json")["Body"].read())
    assert saved["skipped"]["corrupt_image"]["count"] == 1 and saved["skipped"]["missing_image"]["count"] == 1

    (again, *_) = convert_karpathy.main([*common, "--out", remote])
    assert again.already_complete

    # an interrupted run: no report, one group unfinished (no _SUCCESS, a leftover partial shard)
    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    for name in ("conversion_report.json", "index.json", "00001/_SUCCESS"):
        client.delete_object(Bucket=s3_bucket, Key=f"mds/coco/train/{name}")
    client.put_object(Bucket=s3_bucket, Key="mds/coco/train/00001/shard.00009.mds.zstd", Body=b"partial")
    (resumed, *_) = convert_karpathy.main([*common, "--out", remote, "--num-workers", "2"])
    assert resumed.groups_resumed == 2 and resumed.samples_written == 10
    assert "mds/coco/train/00001/shard.00009.mds.zstd" not in keys(s3_bucket, "mds/coco/train/")
    assert read_mds(f"{remote}/train") == read_mds(tmp_path / "local" / "train")
    with pytest.raises(ConversionError, match="different settings"):
        convert_karpathy.main([*common, "--out", remote, "--max-image-side", "8"])


def test_synthetic_to_s3(tmp_path: Path, s3_bucket: str, read_mds) -> None:
    remote = f"s3://{s3_bucket}/synthetic"
    make_synthetic.main(["--out", remote, "--train", "6", "--val", "2", "--test", "2", "--image-size", "32",
                         "--num-workers", "2", "--group-size", "4", "--no-progress"])
    rows = read_mds(f"{remote}/vqa/val")
    assert len(rows) == 2 * 4 and {r["image_id"] for r in rows} == {"val-000000", "val-000001"}
    assert "synthetic/vqa/answer_vocab.json" in keys(s3_bucket, "synthetic/vqa/")
    assert len(read_mds(f"{remote}/nlvr2/train")) == 6


def test_webdataset_tars_read_from_s3(tmp_path: Path, s3_bucket: str, read_mds) -> None:
    """``--tars s3://...``: the same shards and report as from local tars; a rewritten tar (new etag)
    redoes only its group; the worker's downloaded copies are removed."""
    make_tars(tmp_path / "tars")
    store, _ = stores.open_store(f"s3://{s3_bucket}")
    for path in sorted((tmp_path / "tars").iterdir()):
        store.upload_file(str(path), f"web/{path.name}")
    common = ["--source", "laion", "--no-progress", "--num-workers", "1"]
    (local,) = convert_webdataset.main(["--tars", str(tmp_path / "tars"), *common, "--out", str(tmp_path / "local")])
    remote_argv = ["--tars", f"s3://{s3_bucket}/web", *common, "--out", str(tmp_path / "remote")]
    (remote,) = convert_webdataset.main(remote_argv)
    assert read_mds(tmp_path / "remote") == read_mds(tmp_path / "local")
    assert report_counts(remote) == report_counts(local) and (remote.records, remote.groups) == (12, 3)
    assert not list(Path(tempfile.gettempdir(), f"data_prep_tars_{os.getpid()}").iterdir())

    write_tar(tmp_path / "00001.tar", [("10.jpg", image_bytes(8, 8, 99)), ("10.txt", b"changed")])
    store.upload_file(str(tmp_path / "00001.tar"), "web/00001.tar")
    (again,) = convert_webdataset.main(remote_argv)
    assert again.groups_resumed == 2 and "changed" in [r["captions"][0] for r in read_mds(tmp_path / "remote")]
    glob_argv = ["--tars", f"s3://{s3_bucket}/web/0000[01].tar", *common, "--out", str(tmp_path / "two")]
    assert convert_webdataset.main(glob_argv)[0].groups == 2

    # A group that fails (a tar that is not one) removes its downloaded copy too, as it stops.
    store.upload_file(str(tmp_path / "00001.tar"), "bad/00000.tar")
    (tmp_path / "broken.tar").write_bytes(b"not a tar" * 200)
    store.upload_file(str(tmp_path / "broken.tar"), "bad/00001.tar")
    with pytest.raises(ConversionError, match=f"cannot read tar s3://{s3_bucket}/bad/00001.tar "):
        convert_webdataset.main(["--tars", f"s3://{s3_bucket}/bad", *common, "--out", str(tmp_path / "bad")])
    assert not list(Path(tempfile.gettempdir(), f"data_prep_tars_{os.getpid()}").iterdir())
