"""Bad input on any store: one line naming the URL and the variables to set, exit 2, nothing written.

A conversion (``make_synthetic.py`` through its command line) and ``train.py --dry-run`` meet a
missing bucket, credentials that cannot work and an endpoint nobody listens on, on the
session's GCS emulator and Azurite (and S3 through the same module).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import free_port

from data_prep.make_synthetic import CONVERTER
from vlmo_composer import stores

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "yamls" / "quickstart.yaml")
SMALL = ["--train", "2", "--val", "2", "--test", "2", "--image-size", "32", "--no-progress"]


def convert(out: str, capsys) -> tuple[int, str]:
    rc = CONVERTER.cli(["--out", out, *SMALL])
    return rc, capsys.readouterr().err


def one_line(rc: int, err: str, *names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture
def unreachable(monkeypatch):
    """An endpoint on a free port (nothing listens); one attempt per request."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return f"http://127.0.0.1:{free_port()}"


def test_gcs_missing_bucket_bad_credentials_unreachable(gcs_bucket, unreachable, monkeypatch, capsys, tmp_path):
    one_line(*convert("gs://no-such-bucket/data", capsys), "gs://no-such-bucket/data", "does not exist",
             "GOOGLE_APPLICATION_CREDENTIALS")
    with monkeypatch.context() as m:
        m.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
        one_line(*convert(f"gs://{gcs_bucket}/data", capsys), f"gs://{gcs_bucket}/data",
                 "GOOGLE_APPLICATION_CREDENTIALS")
    with monkeypatch.context() as m:
        m.setenv("STORAGE_EMULATOR_HOST", unreachable)
        one_line(*convert(f"gs://{gcs_bucket}/data", capsys), "cannot reach", "check STORAGE_EMULATOR_HOST")
    store, _ = stores.open_store(f"gs://{gcs_bucket}/data")
    assert store.list("data/") == []  # nothing half-written


def test_azure_missing_container_wrong_key_unreachable(azure_container, azurite_server, unreachable, monkeypatch,
                                                       capsys):
    connection = azurite_server["AZURE_STORAGE_CONNECTION_STRING"]
    one_line(*convert("azure://no-such-container/data", capsys), "azure://no-such-container/data",
             "does not exist", "AZURE_STORAGE_CONNECTION_STRING")
    with monkeypatch.context() as m:
        wrong = connection.replace(azurite_server["AZURE_ACCOUNT_ACCESS_KEY"], "d3Jvbmc=" * 11)
        m.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
        one_line(*convert(f"azure://{azure_container}/data", capsys), "access refused", "AZURE_ACCOUNT_ACCESS_KEY")
    with monkeypatch.context() as m:
        m.setenv("AZURE_STORAGE_CONNECTION_STRING", connection.replace(connection.split("BlobEndpoint=")[1],
                                                                       f"{unreachable}/devstoreaccount1;"))
        one_line(*convert(f"azure://{azure_container}/data", capsys), "cannot reach",
                 "BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING")
    store, _ = stores.open_store(f"azure://{azure_container}/data")
    assert store.list("data/") == []


def test_s3_missing_bucket_and_unreachable(s3_bucket, unreachable, monkeypatch, capsys):
    one_line(*convert("s3://no-such-bucket/data", capsys), "s3://no-such-bucket/data", "does not exist",
             "S3_ENDPOINT_URL")
    monkeypatch.setenv("S3_ENDPOINT_URL", unreachable)
    one_line(*convert(f"s3://{s3_bucket}/data", capsys), "cannot reach", "check S3_ENDPOINT_URL")


def test_dry_run_checks_a_gs_save_folder(gcs_bucket, monkeypatch, capsys, tmp_path):
    from vlmo_composer.training.train import main as train_main

    data = tmp_path / "data"
    argv = [QUICKSTART, "--dry-run", f"variables.data={data}"]
    rc = train_main([*argv, "save_folder=gs://no-such-bucket/runs/{run_name}"])
    one_line(rc, capsys.readouterr().err, "save_folder", "gs://no-such-bucket/runs", "does not exist")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    rc = train_main([*argv, f"save_folder=gs://{gcs_bucket}/runs/{{run_name}}"])
    one_line(rc, capsys.readouterr().err, "save_folder", f"gs://{gcs_bucket}/runs", "GOOGLE_APPLICATION_CREDENTIALS")
    rc = train_main([*argv, "train_loader.dataset.local=s3://bucket/image_text/train"])
    one_line(rc, capsys.readouterr().err, "train_loader.dataset.local", "remote")
