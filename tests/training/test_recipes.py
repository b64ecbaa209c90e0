"""The shipped recipes as a user runs them: every YAML from its file, the README's commands as printed.

A trial (README, "Trying a recipe small") is a shipped YAML plus at most five
overrides: ``variables.root=<dir>`` (data in ``<dir>/mds`` from
``make_synthetic.py --recipe-names``, checkpoints in ``<dir>/runs``), the model
size, the duration, the batch and its microbatch. The README's trial block, training commands and
eval commands are read from the README and run: every shipped YAML trains 2 steps
in its chain (base and large, 1 -> 2 -> 3 -> every fine-tune, each stage loading
the previous one's checkpoint by the path written in its YAML). The base chain also
runs 1 -> 2 -> 3 -> a fine-tune exactly as shipped against an S3 server (moto)
holding the synthetic data at the YAMLs' own ``s3://my-bucket/vlmo``, so not even
the root is overridden there. The large YAMLs share that root and its layout (every
stream they read is checked against the recipe names, and their chain runs under
the trial root), so a second S3 chain would run the same code for another minute.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import torch
from distributed import free_port

from vlmo_composer.training import train
from vlmo_composer.evaluation import cli as evaluate
from vlmo_composer.training.builders import resolve_config
from vlmo_composer.checkpoints.sources import composer_model_weights
from vlmo_composer.training.config import ConfigError, load_config
from vlmo_composer.data.loaders import build_dataloader
from vlmo_composer.data.local_cache import CACHE_ROOT_ENV, registered_locals
from vlmo_composer.tasks.vqa import load_answers

ROOT = Path(__file__).resolve().parents[2]
YAMLS = ROOT / "yamls"
README = ROOT / "README.md"
TRIAL = ["task.model.size=small", "max_duration=2ba", "global_train_batch_size=2",
         "device_train_microbatch_size=2"]  # + variables.root=<dir>
BUCKET = "my-bucket"  # the shipped YAMLs' own bucket, served by moto
BASE_CHAIN = ["pretrain/vision_base", "pretrain/text_base", "pretrain/vl_base", "finetune/retrieval_coco_base",
              "finetune/retrieval_f30k_base", "finetune/vqa_base", "finetune/nlvr2_base"]
LARGE_CHAIN = ["pretrain/vision_large", "pretrain/text_large", "pretrain/vl_large", "pretrain/vl_large_web",
               "finetune/retrieval_coco_large", "finetune/retrieval_f30k_large", "finetune/vqa_large",
               "finetune/nlvr2_large"]
SHIPPED = sorted(p.relative_to(YAMLS).with_suffix("").as_posix() for p in YAMLS.rglob("*.yaml"))


def recipe(name: str) -> str:
    return str(YAMLS / f"{name}.yaml")


@pytest.fixture(autouse=True)
def stream_cache(tmp_path, monkeypatch) -> Path:
    """Derived Streaming caches go under the test's folder (subprocesses inherit it)."""
    cache = tmp_path / "stream-cache"
    monkeypatch.setenv(CACHE_ROOT_ENV, str(cache))
    return cache


def test_every_shipped_yaml_is_in_a_tested_chain():
    assert len(SHIPPED) == 16 == len(BASE_CHAIN) + len(LARGE_CHAIN) + 1, SHIPPED  # the tests below loop over these
    assert set(SHIPPED) == set(BASE_CHAIN) | set(LARGE_CHAIN) | {"quickstart"}


# ------------------------------------------------------------------ configuration, no training
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_paths_resolve_without_dot_segments(name):
    cfg = load_config(recipe(name))  # raises on a '.'/'..' segment in any s3:// value
    assert ".." not in str(cfg.save_folder) and ".." not in str(cfg.loggers)


def test_synthetic_recipe_names_hold_every_stream_a_shipped_yaml_reads(synthetic_data):
    streams_read, vocabularies = {}, []
    for name in SHIPPED:
        trial = [f"variables.data={synthetic_data}"] if name == "quickstart" else [
            f"variables.root={synthetic_data.parent}"]
        cfg = load_config(recipe(name), trial)
        streams_read[name] = 0
        for loader in [cfg.train_loader, *cfg.eval_loaders]:
            streams = loader.dataset.get("streams") or {"": loader.dataset}
            for stream in streams.values():
                where = Path(stream.get("remote") or stream["local"])
                assert (where / "index.json").exists(), (name, where)
                streams_read[name] += 1
        if cfg.task.get("answer_vocab"):
            assert Path(cfg.task["answer_vocab"]).exists()
            vocabularies.append(name)
    # Every shipped YAML was read and had streams to check (a train one at least).
    assert sorted(streams_read) == SHIPPED and min(streams_read.values()) >= 1, streams_read
    assert vocabularies == ["finetune/vqa_base", "finetune/vqa_large"]


def test_dot_segments_in_s3_paths_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"save_folder: 's3://b/x/\.\./runs/\{run_name\}' has a '\.' or '\.\.'"):
        load_config(recipe("pretrain/vision_base"), ["save_folder=s3://b/x/../runs/{run_name}"])
    with pytest.raises(ConfigError, match=r"train_loader.dataset.streams.vg.remote"):
        load_config(recipe("pretrain/vl_base"), ["train_loader.dataset.streams.vg.remote=s3://b/./vg"])


@pytest.mark.parametrize("name", ["pretrain/vl_base", "pretrain/vl_large", "pretrain/vl_large_web",
                                  "finetune/nlvr2_base", "quickstart"])
def test_image_size_variable_reaches_the_model_and_every_loader(name):
    cfg = load_config(recipe(name), ["variables.image_size=64"])
    resolved = resolve_config(cfg)
    assert resolved.model.image_size == 64
    for loader in [cfg.train_loader, *cfg.eval_loaders]:
        assert loader.dataset["image_size"] == 64
        assert loader.dataset["max_text_len"] == resolved.model.max_text_len


def test_a_loader_shape_that_disagrees_with_the_model_fails_naming_both_keys():
    cfg = load_config(recipe("pretrain/vl_base"), ["train_loader.dataset.image_size=384"])
    with pytest.raises(ConfigError, match=r"train_loader.dataset.image_size=384 disagrees with task.model.image_size=224"):
        resolve_config(cfg)
    cfg = load_config(recipe("pretrain/text_base"), ["train_loader.dataset.max_text_len=40"])
    with pytest.raises(ConfigError, match=r"train_loader.dataset.max_text_len=40 disagrees with task.model.max_text_len=196"):
        resolve_config(cfg)


def test_vqa_labels_come_from_the_shipped_answer_vocabulary(synthetic_data):
    cfg = load_config(recipe("finetune/vqa_base"), [f"variables.root={synthetic_data.parent}"])
    labels = len(load_answers(str(synthetic_data / "vqa/answer_vocab.json")))
    assert labels != 3129
    resolved = resolve_config(cfg)
    assert resolved.model.vqa_num_labels == labels
    assert cfg.train_loader.dataset["num_labels"] == cfg.eval_loaders[0].dataset["num_labels"] == labels
    # The predict loaders state no shapes: they get the model's, like every loader.
    assert [loader.label for loader in cfg.predict_loaders] == ["test-dev", "test"]
    for loader in cfg.predict_loaders:
        shapes = {k: loader.dataset[k] for k in ("image_size", "max_text_len", "num_labels")}
        assert shapes == {"image_size": 480, "max_text_len": 40, "num_labels": labels}, loader.label
    bad = load_config(recipe("finetune/vqa_base"), [f"variables.root={synthetic_data.parent}",
                                                     "task.model.vqa_num_labels=3129"])
    with pytest.raises(ConfigError, match=rf"task.model.vqa_num_labels=3129 disagrees with task.answer_vocab .*{labels} answers"):
        resolve_config(bad)


def test_list_entries_and_streams_can_be_overridden_or_removed():
    cfg = load_config(recipe("pretrain/vl_base"), [
        "eval_loaders.0.dataset.remote=/data/coco/val2", "eval_loaders.0.num_workers=1",
        "~train_loader.dataset.streams.vg", "train_loader.dataset.streams.sbu=null"])
    assert cfg.eval_loaders[0].dataset["remote"] == "/data/coco/val2" and cfg.eval_loaders[0].num_workers == 1
    assert cfg.eval_loaders[0].label == "coco_val"  # the rest of the entry is kept
    streams = cfg.train_loader.dataset["streams"]
    assert "vg" not in streams and streams["sbu"] is None and set(streams) == {"coco", "sbu", "cc3m"}
    removed = load_config(recipe("pretrain/vl_base"), ["~eval_loaders.0"])
    assert removed.eval_loaders == []
    with pytest.raises(ConfigError, match=r"~train_loader.dataset.streams.laion: there is no such key"):
        load_config(recipe("pretrain/vl_base"), ["~train_loader.dataset.streams.laion"])


# ------------------------------------------------------------------ local stream caches
def test_the_same_loader_built_twice_and_a_killed_runs_leftovers_do_not_block(synthetic_data, stream_cache):
    """eval.py builds the retrieval loader twice (dual encoder, then re-ranking): both live at once."""
    cfg = load_config(recipe("finetune/retrieval_coco_base"), [f"variables.root={synthetic_data.parent}"])
    resolve_config(cfg)
    loader = cfg.eval_loaders[0]
    first = build_dataloader(loader, 2, train=False, cache_namespace="run/eval-test")
    second = build_dataloader(loader, 2, train=False, cache_namespace="run/eval-test")
    locals_ = [first.dataset.streams[0].local, second.dataset.streams[0].local]
    assert locals_[0] != locals_[1] and all(p.startswith(str(stream_cache / "run" / "eval-test")) for p in locals_)
    assert len(next(iter(second))["pixel_values"]) == 2
    del first, second

    # A run killed (its whole process group, as a preemption does, so Python's resource tracker
    # cannot clean up either) right after building its dataset leaves its registration in /dev/shm.
    script = ("import sys, time\n"
              "from vlmo_composer.training.config import load_config\nfrom vlmo_composer.training.builders import resolve_config\n"
              "from vlmo_composer.data.loaders import build_dataloader\n"
              "cfg = load_config(sys.argv[1], sys.argv[2:]); resolve_config(cfg)\n"
              "loader = build_dataloader(cfg.eval_loaders[0], 2, train=False, cache_namespace='killed/eval-test')\n"
              "print(loader.dataset.streams[0].local, flush=True)\ntime.sleep(600)\n")
    killed = subprocess.Popen([sys.executable, "-c", script, recipe("finetune/retrieval_coco_base"),
                               f"variables.root={synthetic_data.parent}"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        stale = killed.stdout.readline().strip()
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    assert stale and os.path.abspath(stale) in registered_locals()
    try:
        again = build_dataloader(loader, 2, train=False, cache_namespace="killed/eval-test")
        assert again.dataset.streams[0].local == f"{stale}~1"  # the next free directory, not an error
        assert len(next(iter(again))["pixel_values"]) == 2
    finally:
        remove_shared_memory_of(stale)


def remove_shared_memory_of(local: str) -> None:
    """What the killed run left in /dev/shm (a normal exit removes it)."""
    for entry in Path("/dev/shm").glob("*_locals"):
        if f"{local}\0".encode() in entry.read_bytes():
            for leftover in Path("/dev/shm").glob(f"{entry.name.split('_')[0]}_*"):
                leftover.unlink(missing_ok=True)


# ------------------------------------------------------------------ the quick-start YAML
def test_quickstart_yaml_trains_and_evaluates_with_the_trial_overrides(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its checkpoints go to ./runs
    overrides = [f"variables.data={synthetic_data}", "max_duration=2ba", "global_train_batch_size=4"]
    assert train.main([recipe("quickstart"), *overrides]) == 0
    assert (tmp_path / "runs/quickstart/checkpoints/latest-rank0.pt").exists()
    assert evaluate.main([recipe("quickstart"), *overrides, "--rerank-k", "4", "--output", "m.json"]) == 0
    assert "tr_r1" in (tmp_path / "m.json").read_text()


# ------------------------------------------------------------------ the README's trial, as printed
def readme_bash_block(after: str) -> list[str]:
    """Command lines of the first ```bash block after the README line ``after`` (comments dropped,
    continuation lines joined)."""
    text = README.read_text()
    block = text[text.index(after):].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].rstrip() for line in block.replace("\\\n", " ").splitlines()]
    return [" ".join(line.split()) for line in lines if line and not line.startswith("#")]


def trial_commands() -> tuple[list[str], list[str]]:
    """The README's "Trying a recipe small" block: its commands, and the overrides ``$T`` stands for."""
    lines = readme_bash_block("### Trying a recipe small")
    assignment = next(line for line in lines if line.startswith("T="))
    return [line for line in lines if line != assignment], shlex.split(assignment[2:])[0].split()


def run_command(line: str, **substitutions: str) -> subprocess.CompletedProcess:
    """One README command line, ``$NAME`` substituted, run from the current folder (``python``
    and ``composer`` from this interpreter's environment)."""
    for name, value in substitutions.items():
        line = line.replace(f"${name}", value)
    argv = shlex.split(line)
    tools = {"python": sys.executable, "composer": str(Path(sys.executable).with_name("composer"))}
    argv[0] = tools.get(argv[0], argv[0])
    return subprocess.run(argv, capture_output=True, text=True, timeout=1200)


def link_entry_points(folder: Path) -> None:
    """``train.py``, ``eval.py``, ``yamls/`` and ``data_prep/`` in ``folder`` (links), so commands
    printed for the repository root run there unchanged and leave nothing in the checkout."""
    for name in ("train.py", "eval.py", "yamls", "data_prep"):
        (folder / name).symlink_to(ROOT / name)


@pytest.fixture(scope="module")
def trial_folder(tmp_path_factory) -> Path:
    """Where the README's trial runs: its make_synthetic command, run as printed, wrote ``trial/mds``."""
    folder = tmp_path_factory.mktemp("readme-trial")
    link_entry_points(folder)
    commands, _ = trial_commands()
    make_data = next(line for line in commands if "make_synthetic.py" in line)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        done = run_command(make_data)
    finally:
        os.chdir(cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "trial/mds/coco/train/index.json").exists()
    return folder


def checkpoint_of(root: Path, run_name: str) -> Path:
    return root / "runs" / run_name / "checkpoints" / "latest-rank0.pt"


def train_in_process(name: str, overrides: list[str], root: Path) -> None:
    """``composer -n 1 train.py yamls/<name>.yaml $T`` without a new process (same code path)."""
    assert train.main([f"yamls/{name}.yaml", *overrides]) == 0, name
    assert checkpoint_of(root, load_config(recipe(name), overrides).run_name).exists(), name


def test_readme_trial_runs_the_base_chain_and_every_readme_eval(trial_folder, monkeypatch):
    """Stage 1 and the retrieval eval by the README's own lines (new processes); the rest of the
    chain and the README's VQA submission and official-NLVR2 evals with the same ``$T``."""
    monkeypatch.chdir(trial_folder)
    commands, trial = trial_commands()
    assert trial == ["variables.root=trial", *TRIAL]  # the S3 chains use the same four
    first = next(line for line in commands if line.startswith("composer"))
    assert "yamls/pretrain/vision_base.yaml" in first
    done = run_command(first, T=" ".join(trial))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    root = trial_folder / "trial"
    assert checkpoint_of(root, "vlmo-base-stage1-vision").exists()
    for name in BASE_CHAIN[1:]:
        train_in_process(name, trial, root)

    retrieval = next(line for line in commands if line.startswith("python eval.py"))
    done = run_command(retrieval, T=" ".join(trial))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IR@10" in done.stdout and "+ ITM top-16" in done.stdout, done.stdout[-2000:]

    readme_evals = readme_bash_block("`yamls/finetune/` holds VQA v2")
    vqa = next(line for line in readme_evals if "--vqa-submission" in line)
    assert evaluate.main([*shlex.split(vqa)[2:], *trial]) == 0
    submission = json.loads((trial_folder / "vqa_test_dev.json").read_text())
    index = json.loads((root / "mds/vqa/test-dev/index.json").read_text())
    assert submission and len(submission) == sum(shard["samples"] for shard in index["shards"])  # every question
    assert all(set(row) == {"question_id", "answer"} for row in submission)
    # The README's official NLVR2 eval: an official-layout file ({"state_dict": ...}, the
    # official key names) of the model the chain just fine-tuned, under the README's file name.
    nlvr2 = next(line for line in readme_evals if "--kind official" in line)
    nlvr2_args = shlex.split(nlvr2)[2:]  # after "python eval.py"
    official = nlvr2_args[nlvr2_args.index("--weights") + 1]
    weights = composer_model_weights(str(checkpoint_of(root, load_config(recipe("finetune/nlvr2_base"), trial).run_name)))
    torch.save({"state_dict": weights}, trial_folder / official)
    assert evaluate.main([*nlvr2_args, *trial, "--output", "nlvr2.json"]) == 0
    assert "accuracy" in (trial_folder / "nlvr2.json").read_text()


def test_readme_trial_runs_the_large_chain_with_the_multi_node_command(trial_folder, monkeypatch):
    """Stage 3 of large by the README's multi-node line with ``--world_size 2`` on this host, as
    the one node of two processes (``-n 2``) and a free port; the rest as printed. A second node
    rank cannot share a host: Streaming's shared memory is per host, so two node leaders on one
    host always pick the same prefix (the run now says so instead of hanging)."""
    monkeypatch.chdir(trial_folder)
    _, trial = trial_commands()
    root = trial_folder / "trial"
    for name in LARGE_CHAIN[:2]:
        train_in_process(name, trial, root)
    launch = next(line for line in readme_bash_block("## Training") if "--node_rank" in line)
    assert launch.startswith("composer --world_size 64 ") and "yamls/pretrain/vl_large.yaml" in launch
    line = launch.replace("composer --world_size 64 ", "composer -n 2 --world_size 2 ").replace("7501", "$PORT")
    done = run_command(f"{line} {' '.join(trial)}", NODE_RANK="0", MASTER_ADDR="127.0.0.1", PORT=str(free_port()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 steps in this process" in done.stdout, done.stdout[-2000:]
    assert checkpoint_of(root, "vlmo-large-stage3-vl").exists()
    for name in LARGE_CHAIN[3:]:
        train_in_process(name, trial, root)
    # The eval each large fine-tune's header documents, on its own checkpoint.
    assert evaluate.main(["yamls/finetune/retrieval_coco_large.yaml", "--rerank-k", "16", *trial,
                          "--output", "large_retrieval.json"]) == 0
    retrieval = json.loads((trial_folder / "large_retrieval.json").read_text())
    assert retrieval[retrieval["split"]]["reranked"]["k"] == 16
    assert evaluate.main(["yamls/finetune/vqa_large.yaml", "--vqa-submission", "vqa_large_test_dev.json",
                          "--split", "test-dev", *trial]) == 0
    assert json.loads((trial_folder / "vqa_large_test_dev.json").read_text())
    assert evaluate.main(["yamls/finetune/nlvr2_large.yaml", *trial, "--output", "large_nlvr2.json"]) == 0
    nlvr2 = json.loads((trial_folder / "large_nlvr2.json").read_text())
    assert {"dev", "test1"} <= set(nlvr2), nlvr2  # dev and test-P, as the header says


# ------------------------------------------------------------------ the chains, on S3 as shipped
@pytest.fixture
def shipped_bucket(s3_bucket, tmp_path, monkeypatch) -> "boto3.client":
    """``s3://my-bucket/vlmo/mds`` holds the synthetic data under the recipes' names."""
    from data_prep.make_synthetic import main as make_synthetic

    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    s3.create_bucket(Bucket=BUCKET)
    make_synthetic(["--out", f"s3://{BUCKET}/vlmo/mds", "--train", "8", "--val", "4", "--test", "4",
                    "--recipe-names", "--no-progress", "--num-workers", "1"])
    monkeypatch.chdir(tmp_path)  # Composer keeps local copies of uploads under ./
    link_entry_points(tmp_path)
    return s3


def run_keys(s3, run: str) -> set[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"vlmo/runs/{run}/checkpoints/")
    return {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])}


def run_on_s3(s3, name: str) -> None:
    """One shipped YAML with the trial overrides but its own ``s3://my-bucket/vlmo`` root."""
    cfg = load_config(recipe(name))
    assert train.main([recipe(name), *TRIAL]) == 0, name
    keys = run_keys(s3, cfg.run_name)
    assert any(k.startswith("ep") for k in keys) and "latest-rank0.pt.symlink" in keys, (name, keys)


def test_base_chain_runs_as_shipped_on_s3_with_readme_commands(shipped_bucket):
    s3 = shipped_bucket
    for name in BASE_CHAIN[:2]:
        run_on_s3(s3, name)
    # The README's training command, as printed (stage 3 loads stage 2 from S3), plus the trial.
    command = next(line for line in readme_bash_block("## Training") if "max_duration=1000ba" in line)
    done = run_command(f"{command} {' '.join(TRIAL)}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "latest-rank0.pt.symlink" in run_keys(s3, "vlmo-base-stage3-vl")
    run_on_s3(s3, "finetune/retrieval_coco_base")  # init_from stage 3's latest-rank0.pt on S3
    # README: python eval.py yamls/finetune/retrieval_coco_base.yaml --rerank-k 16 -- twice in one
    # process (each builds the loader twice), then in a second process.
    eval_args = [recipe("finetune/retrieval_coco_base"), "--rerank-k", "16", *TRIAL]
    for output in ("first.json", "second.json"):
        assert evaluate.main([*eval_args, "--output", output]) == 0
    first, second = (json.loads(Path(f).read_text()) for f in ("first.json", "second.json"))
    recalls = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10")
    assert [first[k] for k in recalls] == [second[k] for k in recalls]
    again = run_command(f"python eval.py yamls/finetune/retrieval_coco_base.yaml --rerank-k 16 {' '.join(TRIAL)} "
                        "--output third.json")
    assert again.returncode == 0, again.stderr[-3000:]
    third = json.loads(Path("third.json").read_text())
    assert [third[k] for k in recalls] == [first[k] for k in recalls]
    assert third[third["split"]]["reranked"]["k"] == 16
