"""The driver's planning cost of ``convert_webdataset.py`` at 40k and 400k pairs (issue 17 item 2).

    python bench/prep_planning.py [--pairs 40000 400000] [--num-workers 2] [--repo PATH]

Builds img2dataset-style tars (``{key}.jpg/.txt/.json``, 10,000 pairs a tar, one
16 px JPEG's bytes reused under every key) in a temporary folder, runs the
converter from ``--repo`` (default this checkout) in a new process with the
local engine, and prints per size: the driver's peak RSS (``VmHWM`` of the
converter's process, polled), the seconds from the command's start to the first
shard file written under ``--out`` (imports included; a group writes one shard
of its tar's 10,000 tiny pairs, so this includes writing one group) and to the
first group's folder (conversion started), the total seconds and
the pairs written per second per worker. The gate: peak RSS at 400k within 10%
of 40k; time to the first shard independent of the input size.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS_PER_TAR = 10_000


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def build_tars(folder: str, pairs: int) -> None:
    """img2dataset's layout: ``00000.tar`` ... with 9-digit keys, one image reused."""
    image = _jpeg()
    os.makedirs(folder, exist_ok=True)
    for shard in range(-(-pairs // PAIRS_PER_TAR)):
        with tarfile.open(os.path.join(folder, f"{shard:05d}.tar"), "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(shard * PAIRS_PER_TAR, min(pairs, (shard + 1) * PAIRS_PER_TAR)):
                key = f"{i:09d}"
                caption = f"a photo of thing number {i}"
                _add(tar, f"{key}.jpg", image)
                _add(tar, f"{key}.txt", caption.encode())
                _add(tar, f"{key}.json", json.dumps({"key": key, "caption": caption, "status": "success"}).encode())


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def convert(repo: Path, tars: str, out: str, num_workers: int) -> dict[str, float]:
    command = [sys.executable, "data_prep/convert_webdataset.py", "--tars", tars, "--out", out,
               "--num-workers", str(num_workers), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    peak_kb, first_shard, first_group = 0, None, None
    while proc.poll() is None:
        peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid) or 0)
        if first_group is None and glob.glob(os.path.join(out, "0*", "")):
            first_group = time.perf_counter() - start
        if first_shard is None and glob.glob(os.path.join(out, "**", "shard.*.mds*"), recursive=True):
            first_shard = time.perf_counter() - start
        time.sleep(0.05)
    total = time.perf_counter() - start
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"the converter failed (exit {proc.returncode}):\n{output[-3000:]}")
    report = json.loads(Path(out, "conversion_report.json").read_text())
    return {"peak_rss_mb": peak_kb / 1024, "first_group_s": first_group if first_group is not None else total,
            "first_shard_s": first_shard if first_shard is not None else total,
            "total_s": total, "written": report["samples_written"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[40_000, 400_000])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose converter runs")
    args = parser.parse_args(argv)
    rows = []
    for pairs in args.pairs:
        with tempfile.TemporaryDirectory(prefix="prep_planning_") as tmp:
            start = time.perf_counter()
            build_tars(os.path.join(tmp, "tars"), pairs)
            built = time.perf_counter() - start
            result = convert(args.repo, os.path.join(tmp, "tars"), os.path.join(tmp, "out"), args.num_workers)
        per_core = result["written"] / result["total_s"] / args.num_workers
        rows.append((pairs, result, per_core))
        print(f"{pairs} pairs: tars built in {built:.1f} s; {json.dumps(result)}", flush=True)
    print(f"\nload average: {os.getloadavg()[0]:.1f}; workers: {args.num_workers}; repo: {args.repo}")
    print("| pairs | driver peak RSS (MB) | first group started (s) | first shard (s) | total (s) "
          "| pairs/s per worker |")
    print("|---:|---:|---:|---:|---:|---:|")
    for pairs, r, per_core in rows:
        print(f"| {pairs:,} | {r['peak_rss_mb']:.0f} | {r['first_group_s']:.1f} | {r['first_shard_s']:.1f} "
              f"| {r['total_s']:.1f} | {per_core:.0f} |")
    if len(rows) >= 2:
        small, large = rows[0][1], rows[-1][1]
        print(f"RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x; "
              f"first shard {large['first_shard_s'] / small['first_shard_s']:.2f}x "
              f"(gate: RSS within 1.10x, first shard independent of size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
