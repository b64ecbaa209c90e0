"""The driver's planning cost of the web-pair and text converters at 40k and 400k records (issue 17 item 2).

    python bench/prep_planning.py [--kind webdataset|text|cc-tsv] [--pairs 40000 400000]
                                  [--engines local spark] [--num-workers 2] [--repo PATH]

Builds the input in a temporary folder: ``webdataset``, img2dataset-style tars
(``{key}.jpg/.txt/.json``, 10,000 pairs a tar, one 16 px JPEG's bytes reused
under every key); ``text``, a json-lines file of one short document a line
(``convert_text.py --unit document --range-size 1mb``, so both sizes write
groups of the same size); ``cc-tsv``, a ``caption<TAB>url`` tsv with
img2dataset's ``files`` folder holding the first 10,000 rows' images (the other
rows are counted missing; ``convert_cc.py --tsv``, default ``--range-size``).
It runs the converter from ``--repo`` (default this checkout) in a new process
per engine, and prints per size: the driver's peak RSS (``VmHWM`` of the
converter's process, polled; with Spark the JVM is another process), the
seconds from the command's start to the first group's folder (planning done,
writing begun) and to the first shard file written under ``--out`` (imports
included), the total seconds, and the records (pairs, lines written, tsv rows)
per second per worker, over the whole command and over the conversion phase
(first group folder to the end: no imports, planning or Spark start-up). The gate: peak RSS at 400k within 10%
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


def build_text(folder: str, lines: int) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"text": f"Document number {i}. It has two sentences about thing {i % 97}."}) + "\n")


def build_cc_tsv(folder: str, rows: int, images: int = 10_000) -> None:
    """A CC3M-style tsv (no header) and img2dataset's ``files`` layout for its first ``images`` rows."""
    image = _jpeg()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "cc.tsv"), "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(f"a photo of thing number {i}\thttp://img.example/{i}.jpg\n")
    for i in range(min(rows, images)):
        sub = os.path.join(folder, "images", f"{i // 10_000:05d}")
        if i % 10_000 == 0:
            os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{i:09d}.jpg"), "wb") as f:
            f.write(image)


KINDS = {
    "webdataset": (build_tars, lambda d: ["data_prep/convert_webdataset.py", "--tars", d]),
    "text": (build_text, lambda d: ["data_prep/convert_text.py", "--inputs", os.path.join(d, "corpus.jsonl"),
                                    "--unit", "document", "--range-size", "1mb"]),  # (dropped for older code)
    "cc-tsv": (build_cc_tsv, lambda d: ["data_prep/convert_cc.py", "--tsv", os.path.join(d, "cc.tsv"),
                                        "--images", os.path.join(d, "images")]),
}


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def convert(repo: Path, args: list[str], out: str, num_workers: int, engine: str) -> dict[str, float]:
    command = [sys.executable, *args, "--out", out, "--num-workers", str(num_workers), "--no-progress",
               "--engine", engine]
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
            "total_s": total, "written": report["samples_written"], "records": report["records"],
            "groups": report["groups"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=tuple(KINDS), default="webdataset")
    parser.add_argument("--pairs", type=int, nargs="+", default=[40_000, 400_000], help="records (pairs, lines)")
    parser.add_argument("--engines", nargs="+", choices=("local", "spark"), default=["local"])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose converter runs")
    args = parser.parse_args(argv)
    build, command = KINDS[args.kind]
    rows = []
    for pairs in args.pairs:
        with tempfile.TemporaryDirectory(prefix="prep_planning_") as tmp:
            start = time.perf_counter()
            build(os.path.join(tmp, "in"), pairs)
            built = time.perf_counter() - start
            for engine in args.engines:
                out = os.path.join(tmp, f"out_{engine}")
                argv = command(os.path.join(tmp, "in"))
                if "--range-size" not in (args.repo / argv[0]).read_text():  # code from before byte ranges
                    argv = argv[:-2] if argv[-2] == "--range-size" else argv
                result = convert(args.repo, argv, out, args.num_workers, engine)
                rows.append((pairs, engine, result, os.getloadavg()[0]))
                print(f"{args.kind} {pairs} on {engine}: input built in {built:.1f} s; {json.dumps(result)}",
                      flush=True)
    print(f"\nkind: {args.kind}; workers: {args.num_workers}; repo: {args.repo}")
    print("| records | engine | load | driver peak RSS (MB) | first group (s) | first shard (s) | total (s) "
          "| records/s per worker, whole command | same, conversion phase |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for pairs, engine, r, load in rows:
        # the input's units: pairs or lines written; a tsv's rows (most have no download here)
        done = r["records"] if args.kind == "cc-tsv" else r["written"]
        whole = done / r["total_s"] / args.num_workers
        phase = done / max(r["total_s"] - r["first_group_s"], 1e-3) / args.num_workers
        print(f"| {pairs:,} | {engine} | {load:.1f} | {r['peak_rss_mb']:.0f} | {r['first_group_s']:.1f} "
              f"| {r['first_shard_s']:.1f} | {r['total_s']:.1f} | {whole:.0f} | {phase:.0f} |")
    for engine in args.engines:
        mine = [r for _, e, r, _ in rows if e == engine]
        if len(mine) >= 2:
            small, large = mine[0], mine[-1]
            print(f"{engine}: RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x; "
                  f"first shard {large['first_shard_s'] / small['first_shard_s']:.2f}x "
                  f"(gate: RSS within 1.10x, first shard independent of size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
