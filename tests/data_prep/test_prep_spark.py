"""``--engine spark``: the local engine's bytes, resumption by group, one-line errors.

All tests share one local[2] session (the ``spark`` fixture); the engine joins it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prep_helpers import dataset_files, make_coco_like
from test_prep_web_pairs import make_tars

from data_prep import convert_karpathy, convert_text, convert_webdataset, spark_engine
from data_prep.common import ConversionError
from data_prep.spark_engine import find_java
from data_prep.writer import GROUP_DONE_NAME, RECORD_DELAY_ENV, REPORT_NAME

COCO_COUNT = 24  # 8 groups of 3; 3 corrupt and 2 missing images (see make_coco_like)


def karpathy_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "coco", "--json", str(root / "dataset_coco.json"), "--images", str(root / "coco"),
            "--out", str(out), "--group-size", "3", "--shard-size", "2kb", "--num-workers", "2", *extra]


def webdataset_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--tars", str(root / "tars"), "--source", "laion", "--out", str(out),
            "--group-size", "2", "--shard-size", "2kb", "--num-workers", "2", *extra]


def report_without_timing(folder: Path) -> dict[str, Any]:
    report = json.loads((folder / REPORT_NAME).read_text())
    report.pop("elapsed_s")
    return report


def text_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--inputs", str(root / "corpus.jsonl"), "--unit", "paragraph", "--range-size", "64",
            "--out", str(out), "--shard-size", "2kb", "--num-workers", "2", *extra]


@pytest.mark.parametrize("converter", ["webdataset", "karpathy", "text"])
def test_spark_writes_the_local_engines_bytes(converter: str, spark, tmp_path: Path, capsys) -> None:
    if converter == "webdataset":
        make_tars(tmp_path / "tars")
        main, args, split = convert_webdataset.main, webdataset_args, ""
    elif converter == "text":  # byte ranges of a json-lines file, one with a malformed line
        lines = [json.dumps({"text": f"Document {i}. " * (i % 4 + 1)}) for i in range(12)]
        (tmp_path / "corpus.jsonl").write_text("\n".join(lines[:5] + ["{broken"] + lines[5:]) + "\n")
        main, args, split = convert_text.main, text_args, ""
    else:
        make_coco_like(tmp_path, COCO_COUNT)
        main, args, split = convert_karpathy.main, karpathy_args, "train"
    out = tmp_path / "out"  # both engines write the same path, so the reports' locations match
    main(args(tmp_path, out, "--no-progress"))
    shutil.move(out, tmp_path / "local")
    capsys.readouterr()

    (report, *_) = main(args(tmp_path, out, "--engine", "spark"))
    printed = capsys.readouterr()
    local, spark_out = tmp_path / "local" / split, out / split
    files = dataset_files(spark_out)
    assert files == dataset_files(local)  # shards, group indexes, merged index, manifest, _SUCCESS
    assert any(".mds" in name for name in files)
    assert report_without_timing(spark_out) == report_without_timing(local)
    # the driver's progress (records, groups) and the local engine's summary table; a job planned
    # per tar or byte range does not know its records up front: its bar counts groups, records as a postfix
    done = f"{report.groups}/{report.groups}"
    assert (f"| {done} [" in printed.err and " records]" in printed.err if converter != "karpathy"
            else f"groups {done}" in printed.err)
    assert "split" in printed.out and "skipped" in printed.out and f"-> {out}" in printed.out


def test_killed_spark_job_resumes_by_group(spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_coco_like(tmp_path, COCO_COUNT)
    reference = tmp_path / "reference"
    convert_karpathy.main(karpathy_args(tmp_path, reference, "--num-workers", "1", "--no-progress"))
    out = tmp_path / "out"
    monkeypatch.setenv(RECORD_DELAY_ENV, "0.3")  # reaches the executors: ~1 s per group of 3
    monkeypatch.setattr(spark_engine, "STOP_CHECK_S", 0.2)  # cancelled tasks' workers stop within 0.2 s
    outcome: dict[str, BaseException] = {}

    def convert() -> None:
        try:
            convert_karpathy.main(karpathy_args(tmp_path, out, "--engine", "spark", "--no-progress"))
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e

    thread = threading.Thread(target=convert)
    thread.start()
    deadline = time.monotonic() + 120
    while not list((out / "train").glob(f"*/{GROUP_DONE_NAME}")):
        assert thread.is_alive(), outcome
        assert time.monotonic() < deadline, "no group finished in time"
        time.sleep(0.05)
    spark.sparkContext.cancelAllJobs()  # the job dies mid-way, its tasks interrupted
    thread.join(60)
    assert isinstance(outcome.get("error"), ConversionError), outcome
    assert "cancelled" in str(outcome["error"]) and "run the same command again to resume" in str(outcome["error"])
    done_before = len(list((out / "train").glob(f"*/{GROUP_DONE_NAME}")))
    time.sleep(1.0)  # nothing of the cancelled job writes on after it returned
    assert len(list((out / "train").glob(f"*/{GROUP_DONE_NAME}"))) == done_before
    assert 1 <= done_before < 8
    assert not (out / "train" / REPORT_NAME).exists()

    monkeypatch.delenv(RECORD_DELAY_ENV)
    (report, *_) = convert_karpathy.main(karpathy_args(tmp_path, out, "--engine", "spark", "--no-progress"))
    assert report.groups_resumed == done_before
    assert dataset_files(out / "train") == dataset_files(reference / "train")
    resumed, whole = report_without_timing(out / "train"), report_without_timing(reference / "train")
    assert resumed.pop("groups_resumed") == done_before and whole.pop("groups_resumed") == 0
    whole["location"] = resumed["location"]
    assert resumed == whole


def test_without_java_one_line_names_what_to_install(tmp_path: Path) -> None:
    make_coco_like(tmp_path, 3)
    empty = tmp_path / "no_jdk"
    empty.mkdir()
    env = {**os.environ, "JAVA_HOME": str(empty), "PATH": str(empty)}
    result = subprocess.run([sys.executable, "-m", "data_prep.convert_karpathy",
                             *karpathy_args(tmp_path, tmp_path / "out", "--engine", "spark")],
                            cwd=Path(__file__).parents[2], env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "needs Java 17+" in result.stderr and f"JAVA_HOME={empty}" in result.stderr
    assert "apt-get install -y openjdk-17-jre-headless" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before planning or writing


def test_no_java_anywhere_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConversionError, match=r"needs Java 17\+ and found none .*openjdk-17"):
        find_java()
