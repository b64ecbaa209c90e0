"""Converter inputs on an object store (s3://, gs://, azure:// on local servers) convert to the same
bytes as local copies of them (data_prep/inputs.py): line files read in byte ranges, annotation json and
image folders read object by object; a missing object or bucket is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prep_helpers import corrupt_jpeg, image_bytes, make_coco_like, report_counts, write
from published_layouts import cc3m_in_shards

from data_prep import convert_cc, convert_karpathy, convert_text, downloaded, inputs
from vlmo_composer import stores

RUN_FILES = ("conversion_manifest.json", "conversion_report.json")  # the manifest names the input paths
COMMON = ["--no-progress", "--num-workers", "2"]


def upload(local: Path, url: str) -> None:
    """Every file under ``local`` to the prefix ``url``."""
    store, prefix = stores.open_store(url)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload_file(str(path), f"{prefix}/{path.relative_to(local).as_posix()}")


def written(root: Path) -> dict[str, bytes]:
    """Every shard, index and group marker of a conversion (not the run's manifest and report)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in RUN_FILES}


def text_corpus(root: Path) -> None:
    lines = [json.dumps({"text": f"Document {i} says hello. It has two sentences."}) for i in range(12)]
    lines[4], lines[7] = "{not json", json.dumps({"text": 7})
    write(root / "a.jsonl", "\n".join(lines) + "\n")
    write(root / "b.txt", "\n\n".join(f"Paragraph {i} line one.\nLine two of {i}." for i in range(10)))


def cc_inputs(root: Path) -> None:
    """A 12-row tsv; images flat and in img2dataset's layout, row 3 missing, 5 another url's, 7 corrupt."""
    write(root / "train.tsv", "".join(f"caption {i}\thttp://x/{i}.jpg\n" for i in range(12)))
    for row in range(12):
        name = f"{row}.jpg" if row < 6 else f"00000/{row:09d}.jpg"
        if row != 3:
            write(root / "images" / name, corrupt_jpeg() if row == 7 else image_bytes(10, 8, row))
    write(root / "images" / "5.json", json.dumps({"url": "http://elsewhere/5.jpg", "caption": "caption 5"}))


def test_line_files_on_stores_read_by_range_match_local(tmp_path: Path, gcs_bucket: str, azure_container: str,
                                                        s3_bucket: str) -> None:
    """convert_text (a jsonl on gs://, a text file on azure://) and convert_cc --tsv (tsv and images on
    s3://), cut into many small ranges, give the bytes of the local conversion; a rewritten object
    (new etag) redoes only the groups whose lines changed."""
    text_corpus(tmp_path / "text")
    gs, az = f"gs://{gcs_bucket}/corpus", f"azure://{azure_container}/corpus"
    upload(tmp_path / "text", gs)
    upload(tmp_path / "text", az)
    data = (tmp_path / "text" / "a.jsonl").read_bytes()
    for url in (f"{gs}/a.jsonl", f"{az}/a.jsonl"):  # the stores' own stat and ranged GET
        assert inputs.read_range(url, 5, 77) == data[5:77] and inputs.stat(url).size == len(data)

    args = ["--unit", "paragraph", "--max-chars", "30", "--range-size", "150", *COMMON]
    (local,) = convert_text.main(["--inputs", str(tmp_path / "text" / "a.jsonl"), str(tmp_path / "text" / "b.txt"),
                                  *args, "--out", str(tmp_path / "local_text")])
    store_argv = ["--inputs", f"{gs}/a.jsonl", f"{az}/b.txt", *args, "--out", str(tmp_path / "store_text")]
    (remote,) = convert_text.main(store_argv)
    assert local.groups == 7 and written(tmp_path / "store_text") == written(tmp_path / "local_text")
    assert report_counts(remote) == report_counts(local) == {"malformed_json_line": 1, "non_text_document": 1}

    lines = data.decode().splitlines()
    lines[-1] = json.dumps({"text": "An edited last document."})
    stores.open_store(gs)[0].write_bytes("corpus/a.jsonl", ("\n".join(lines) + "\n").encode())
    (again,) = convert_text.main(store_argv)
    assert again.groups_resumed == local.groups - 1

    cc = tmp_path / "cc"
    cc_inputs(cc)
    s3 = f"s3://{s3_bucket}/cc"
    upload(cc, s3)
    cc_args = ["--range-size", "60", *COMMON]
    (local,) = convert_cc.main(["--tsv", str(cc / "train.tsv"), "--images", str(cc / "images"), *cc_args,
                                "--out", str(tmp_path / "local_cc")])
    (remote,) = convert_cc.main(["--tsv", f"{s3}/train.tsv", "--images", f"{s3}/images", *cc_args,
                                 "--out", str(tmp_path / "store_cc")])
    assert local.groups == 4 and written(tmp_path / "store_cc") == written(tmp_path / "local_cc")
    assert report_counts(remote) == report_counts(local) == {"missing_image": 1, "url_mismatch": 1,
                                                             "corrupt_image": 1}


def test_img2dataset_shard_folders_on_stores_are_listed_by_delimiter(tmp_path: Path, gcs_bucket: str,
                                                                     azure_container: str, s3_bucket: str) -> None:
    """s3/gs/azure give a folder's top level from one delimiter listing (shard folders, not their files)
    and a group's downloads from its shard folders only: what the local folder gives."""
    local = tmp_path / "dl"
    cc3m_in_shards(local)
    layout = downloaded.shard_folders(str(local))
    top = inputs.list_dir(str(local))
    spans = (range(0, 7), range(7, 19), range(19, 30))
    want = [{r: [p[len(str(local)):] for p in ps]
             for r, ps in downloaded.index_downloads(str(local), s, layout).items()} for s in spans]
    for url in (f"s3://{s3_bucket}/dl", f"gs://{gcs_bucket}/dl", f"azure://{azure_container}/dl"):
        upload(local, url)
        assert inputs.list_dir(url) == top == (["00000", "00001", "00002"], [
            f"0000{i}{ext}" for i in range(3) for ext in (".parquet", "_stats.json")])
        assert inputs.list_dir(f"{url}/00001")[0] == [] and inputs.first_file(f"{url}/00001") == "000010.jpg"
        assert downloaded.shard_folders(url) == layout
        assert [{r: [p[len(url):] for p in ps] for r, ps in downloaded.index_downloads(url, s, layout).items()}
                for s in spans] == want


def test_karpathy_json_and_images_on_a_store_match_local(tmp_path: Path, gcs_bucket: str) -> None:
    """The annotation json and the image root on gs://: the same shards; a missing image is missing_image."""
    json_path, images = make_coco_like(tmp_path / "raw", 12)
    url = f"gs://{gcs_bucket}/karpathy"
    upload(tmp_path / "raw", url)
    args = ["--dataset", "coco", *COMMON]
    local = convert_karpathy.main(["--json", str(json_path), "--images", str(images), *args,
                                   "--out", str(tmp_path / "local")])
    remote = convert_karpathy.main(["--json", f"{url}/dataset_coco.json", "--images", f"{url}/coco", *args,
                                    "--out", str(tmp_path / "store")])
    assert written(tmp_path / "store") == written(tmp_path / "local")
    assert [report_counts(r) for r in remote] == [report_counts(r) for r in local]
    assert report_counts(remote[0]) == {"missing_image": 1, "corrupt_image": 1}


@pytest.mark.parametrize("argv, message", [
    (["convert_text", "--inputs", "gs://test-bucket/nowhere/a.jsonl"],
     "error: no input files at gs://test-bucket/nowhere/a.jsonl"),
    (["convert_karpathy", "--dataset", "coco", "--json", "gs://no-such-bucket/dataset_coco.json", "--images", "x"],
     "error: gs://no-such-bucket/dataset_coco.json: bucket 'no-such-bucket' does not exist; set "
     "GOOGLE_APPLICATION_CREDENTIALS"),
    (["convert_cc", "--tsv", "azure://no-such-container/train.tsv", "--images", "azure://no-such-container/i"],
     "error: azure://no-such-container/train.tsv: container 'no-such-container' does not exist; set AZURE_"),
])
def test_missing_store_input_is_one_line(tmp_path: Path, gcs_bucket: str, azure_container: str, capsys,
                                         argv: list[str], message: str) -> None:
    converter = {"convert_text": convert_text, "convert_karpathy": convert_karpathy, "convert_cc": convert_cc}[argv[0]]
    assert converter.CONVERTER.cli([*argv[1:], "--no-progress", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
