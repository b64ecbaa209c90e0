"""data_prep to ``s3://`` through a flaky store (tests/faults/proxy.py in front of moto):
the output is byte-identical to a fault-free conversion, an outage stops the
conversion and the same command then completes it, and no credential reaches
any file it writes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from prep_helpers import make_coco_like

from s3_server import moto_s3
from data_prep import convert_karpathy
from faults.compare import assert_same_conversion
from faults.proxy import FaultProxy

pytestmark = pytest.mark.s3

SECRET_KEY = f"vlmoPrepSecret{secrets.token_hex(12)}"


def objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_conversion_through_faults_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    json_path, images = make_coco_like(tmp_path, 12)
    common = ["--dataset", "coco", "--json", str(json_path), "--images", str(images), "--group-size", "4",
              "--no-progress", "--staging-dir", str(tmp_path / "staging"), "--num-workers", "2"]
    with moto_s3(monkeypatch.setenv, secret_key=SECRET_KEY) as bucket:
        direct = os.environ["S3_ENDPOINT_URL"]
        client = boto3.client("s3", endpoint_url=direct)
        convert_karpathy.main([*common, "--out", f"s3://{bucket}/clean"])

        with FaultProxy(int(direct.rsplit(":", 1)[1]), seed=4, rate=0.15, stall_seconds=3) as proxy:
            monkeypatch.setenv("S3_ENDPOINT_URL", proxy.url)
            monkeypatch.setenv("VLMO_S3_READ_TIMEOUT", "2")
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
            proxy.outage("internal")  # every request: 500 InternalError, retried AWS_MAX_ATTEMPTS times
            with pytest.raises(ClientError, match=r"\(InternalError\) when calling the GetObject operation "
                                                  r"\(reached max retries: 2\)") as stopped:
                convert_karpathy.main([*common, "--out", f"s3://{bucket}/flaky"])
            assert stopped.value.response["Error"]["Code"] == "InternalError"
            outage_failures = proxy.injected()
            proxy.restore()
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", "6")
            convert_karpathy.main([*common, "--out", f"s3://{bucket}/flaky"])
            print("data_prep fault counts:", dict(proxy.counts))
        injected = proxy.injected() - outage_failures
        assert outage_failures >= 1 and injected >= 3, dict(proxy.counts)

        clean, flaky = objects(client, bucket, "clean/"), objects(client, bucket, "flaky/")
        assert_same_conversion(clean, flaky)
        written = list(clean.values()) + list(flaky.values())
        written += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
        assert not [b for b in written if SECRET_KEY.encode() in b]
