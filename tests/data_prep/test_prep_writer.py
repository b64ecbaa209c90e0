"""The shared writer: identical output for any worker count, resume after a kill, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prep_helpers import dataset_files, make_coco_like, write

from data_prep import convert_karpathy
from data_prep.common import ConversionError
from data_prep.writer import GROUP_DONE_NAME, RECORD_DELAY_ENV

COUNT = 24  # 3 corrupt (i % 7 == 6) and 2 missing (i % 11 == 10): 19 written


def karpathy_args(json_path: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "coco", "--json", str(json_path), "--images", str(images), "--out", str(out),
            "--group-size", "3", "--shard-size", "2kb", "--no-progress", *extra]


def test_one_and_two_workers_write_the_same_dataset(tmp_path: Path, read_mds) -> None:
    json_path, images = make_coco_like(tmp_path, COUNT)
    one = convert_karpathy.main(karpathy_args(json_path, images, tmp_path / "one", "--num-workers", "1"))
    two = convert_karpathy.main(karpathy_args(json_path, images, tmp_path / "two", "--num-workers", "2"))
    rows_one, rows_two = read_mds(tmp_path / "one" / "train"), read_mds(tmp_path / "two" / "train")
    assert len(rows_one) == 19 and rows_one == rows_two
    assert [r["image_id"] for r in rows_one] == [str(i) for i in range(COUNT) if i % 7 != 6 and i % 11 != 10]
    assert one[0].skipped == two[0].skipped and one[0].groups == 8
    # same shards, same bytes, same merged index (several shards per group at 2kb)
    files = dataset_files(tmp_path / "one" / "train")
    assert files == dataset_files(tmp_path / "two" / "train")
    assert sum(name.endswith(".mds.zstd") for name in files) > 8


def test_killed_conversion_resumes_without_duplicates(tmp_path: Path, read_mds) -> None:
    json_path, images = make_coco_like(tmp_path, COUNT)
    reference = tmp_path / "reference"
    convert_karpathy.main(karpathy_args(json_path, images, reference, "--num-workers", "1"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_prep.convert_karpathy",
               *karpathy_args(json_path, images, out, "--num-workers", "2")]
    env = {**os.environ, RECORD_DELAY_ENV: "0.3"}  # 8 groups of 3 records: ~4 s of work
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "train").glob(f"*/{GROUP_DONE_NAME}")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no group finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the conversion and its worker processes
        process.wait()
    done_before = len(list((out / "train").glob(f"*/{GROUP_DONE_NAME}")))
    assert 1 <= done_before < 8
    assert not (out / "train" / "conversion_report.json").exists()

    (report, *_) = convert_karpathy.main(karpathy_args(json_path, images, out, "--num-workers", "2"))
    assert report.groups_resumed == done_before
    assert read_mds(out / "train") == read_mds(reference / "train")
    assert dataset_files(out / "train") == dataset_files(reference / "train")


def test_rerun_is_kept_refused_or_overwritten(tmp_path: Path, read_mds, capsys) -> None:
    json_path, images = make_coco_like(tmp_path, 6)
    out = tmp_path / "out"
    convert_karpathy.main(karpathy_args(json_path, images, out))
    index = out / "train" / "index.json"
    stamp = index.stat().st_mtime_ns
    (again, *_) = convert_karpathy.main(karpathy_args(json_path, images, out, "--num-workers", "2"))
    assert again.already_complete and again.samples_written == 6 and index.stat().st_mtime_ns == stamp
    assert "already complete" in capsys.readouterr().out

    with pytest.raises(ConversionError, match=r"different settings.*max_image_side.*--overwrite"):
        convert_karpathy.main(karpathy_args(json_path, images, out, "--max-image-side", "8"))
    edited = json_path.read_text().replace("caption 3 one", "an edited caption")
    json_path.write_text(edited)  # same ids, other content
    with pytest.raises(ConversionError, match=r"differs in: input records"):
        convert_karpathy.main(karpathy_args(json_path, images, out))
    assert index.stat().st_mtime_ns == stamp  # refused before touching anything

    (resized, *_) = convert_karpathy.main(karpathy_args(json_path, images, out, "--max-image-side", "8", "--overwrite"))
    assert not resized.already_complete
    assert {max(r["width"], r["height"]) for r in read_mds(out / "train")} == {8}


def test_foreign_folder_is_refused(tmp_path: Path) -> None:
    json_path, images = make_coco_like(tmp_path, 3)
    write(tmp_path / "out" / "train" / "precious.txt", "not ours")
    with pytest.raises(ConversionError, match=r"not empty and was not written by data_prep.*--overwrite"):
        convert_karpathy.main(karpathy_args(json_path, images, tmp_path / "out"))
    assert (tmp_path / "out" / "train" / "precious.txt").exists()


def test_script_exit_code_and_message(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "data_prep/convert_karpathy.py", "--dataset", "coco",
                             "--json", str(tmp_path / "missing.json"), "--images", str(tmp_path),
                             "--out", str(tmp_path / "out")],
                            cwd=Path(__file__).parents[2], capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: coco Karpathy json not found:" in result.stderr and "missing.json" in result.stderr
