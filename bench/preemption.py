"""Time from SIGTERM to a durable checkpoint (saved and uploaded with its ``latest`` pointer).

Starts a local S3 server (moto, 127.0.0.1), trains the quick-start recipe at the
given model size with checkpoints to ``s3://``, sends SIGTERM after the first
step, and reports what ``train.py`` measured (signal -> checkpoint and pointer
in the store), the time until the process exited, and the checkpoint's size.
On CPU the time is dominated by finishing the step in progress and by writing
and uploading the state (model + AdamW moments, fp32).

    python bench/preemption.py --data data/synthetic --size base      # end to end (a GPU node)
    python bench/preemption.py --size base --save-only                 # the state alone (CPU, ~3 GiB RAM)

``--save-only`` builds the task and its AdamW state at that size (moments
allocated, as after the first step) and times what the checkpoint costs on top
of the step in progress: ``torch.save`` of model + optimizer state to local disk
with an fsync. The upload then adds state size / bandwidth to the store.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
DURABLE = re.compile(r"checkpoint (\S+) durable ([0-9.]+)s after the signal")


def run(data: Path, size: str, batch: int, workdir: Path, endpoint: str) -> dict:
    order = workdir / "order.jsonl"
    command = [sys.executable, str(ROOT / "train.py"), str(ROOT / "yamls/quickstart.yaml"), f"variables.data={data}",
               f"task.model.size={size}", f"global_train_batch_size={batch}", "max_duration=1000ba",
               "eval_loaders=[]", "progress_bar=false", "run_name=bench", "autoresume=true", "save_overwrite=true",
               "save_folder=s3://bench/{run_name}/checkpoints", "save_interval=1000ba",
               f"callbacks.sample_order_logger.path={order}", "train_loader.num_workers=0"]
    env = {**os.environ, "S3_ENDPOINT_URL": endpoint}
    with open(workdir / "train.out", "w") as out:
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
        while not order.exists() or not order.read_text().strip():
            if process.poll() is not None:
                sys.exit(f"training ended early:\n{(workdir / 'train.out').read_text()[-3000:]}")
            time.sleep(0.2)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait()
        exited = time.monotonic() - signalled
    text = (workdir / "train.out").read_text()
    match = DURABLE.search(text)
    if not match:
        sys.exit(f"no durable checkpoint reported (exit {process.returncode}):\n{text[-3000:]}")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    objects = s3.list_objects_v2(Bucket="bench", Prefix="bench/checkpoints/")["Contents"]
    size_bytes = max(o["Size"] for o in objects)
    return {"durable_s": float(match.group(2)), "exit_s": exited, "state_gib": size_bytes / 2**30,
            "exit_code": process.returncode}


def save_only(size: str) -> dict:
    import torch

    from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig, VLPretrainTask

    task = VLPretrainTask(VLPretrainConfig(model={"size": size}))
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    for p in task.parameters():  # what AdamW holds after its first step
        optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": torch.zeros_like(p)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        start = time.monotonic()
        with open(path, "wb") as f:
            torch.save({"state": {"model": task.state_dict(), "optimizers": optimizer.state_dict()}}, f)
            f.flush()
            os.fsync(f.fileno())
        seconds = time.monotonic() - start
        return {"state_gib": path.stat().st_size / 2**30, "save_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data/synthetic", help="make_synthetic output")
    parser.add_argument("--size", default="base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--save-only", action="store_true", help="time torch.save of the state only")
    args = parser.parse_args()
    if args.save_only:
        result = save_only(args.size)
        print(f"| {args.size} | {result['state_gib']:.2f} GiB | torch.save + fsync {result['save_s']:.1f} s |")
        return
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.data.resolve(), args.size, args.batch, Path(tmp), endpoint)
    finally:
        server.stop()
    print(f"| size | state (GiB) | SIGTERM -> durable checkpoint (s) | SIGTERM -> exit (s) | exit code |")
    print(f"| {args.size} | {result['state_gib']:.2f} | {result['durable_s']:.1f} | {result['exit_s']:.1f} | "
          f"{result['exit_code']} |")


if __name__ == "__main__":
    main()
