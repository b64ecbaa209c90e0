"""``gs://`` end to end against a real local GCS server (gcp-storage-emulator, one per session).

The synthetic conversion writes its shards and ``answer_vocab.json`` to ``gs://``; the
shipped quick-start YAML (tiny model, two steps) trains on those shards through
Streaming and saves its checkpoint there through Composer; ``eval.py`` evaluates the
checkpoint from ``gs://`` on a ``gs://`` split; ``init_from``, ``build_model`` and the VQA
answer vocabulary read from ``gs://``. Then the chain goes on as the README chains stages: a
next pre-training stage loads the gs:// ``latest-rank0.pt`` (``load_path``, weights only) and a
shipped fine-tune YAML starts from that stage's gs:// ``latest-rank0.pt`` (``init_from``), two
steps each. Every client is the library's own, pointed at the
emulator by ``STORAGE_EMULATOR_HOST`` and Google default credentials.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmo_composer import stores

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "yamls" / "quickstart.yaml")
RETRIEVAL = str(ROOT / "yamls" / "finetune" / "retrieval_coco_base.yaml")
TINY = ["task.model.hidden_size=32", "task.model.num_layers=2", "task.model.num_heads=2", "task.model.ffn_size=64",
        "task.model.vl_ffn_start=1", "global_train_batch_size=4", "max_duration=2ba", "train_loader.num_workers=0",
        "progress_bar=false", "callbacks={}"]


def run(main, argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    """``train.py``/``eval.py`` in this process (their ``main``; saves two interpreter start-ups)."""
    monkeypatch.chdir(cwd)
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, (out.out + out.err)[-4000:]
    return out.out


@pytest.mark.slow
def test_gs_conversion_training_checkpoint_eval_and_init_from(gcs_bucket: str, tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    from data_prep.make_synthetic import main as make_synthetic
    from vlmo_composer.checkpoints.sources import build_model, load_weights_into
    from vlmo_composer.evaluation.cli import main as eval_main
    from vlmo_composer.tasks.vqa import load_answers
    from vlmo_composer.training.train import main as train_main

    root = f"gs://{gcs_bucket}/synthetic"
    make_synthetic(["--out", root, "--train", "8", "--val", "4", "--test", "4", "--image-size", "64", "--no-progress"])
    store, _ = stores.open_store(root)
    assert f"synthetic/image_text/train/index.json" in store.list("synthetic/image_text/train/")
    report = json.loads(store.read_bytes("synthetic/image_text/train/conversion_report.json"))
    assert report["samples_written"] == 8 and report["location"] == f"{root}/image_text/train", report
    answers = load_answers(f"{root}/vqa/answer_vocab.json")
    assert answers and all(isinstance(a, str) for a in answers)

    save_folder = f"gs://{gcs_bucket}/runs/{{run_name}}/checkpoints"
    train_data = [f"train_loader.dataset.remote={root}/image_text/train",
                  f"train_loader.dataset.local={tmp_path / 'cache/train'}", "eval_loaders=[]"]
    eval_data = [f"eval_loaders.0.dataset.remote={root}/image_text/test",
                 f"eval_loaders.0.dataset.local={tmp_path / 'cache/test'}"]
    run(train_main, [QUICKSTART, "run_name=gcs", *TINY, *train_data, f"save_folder={save_folder}", "save_interval=2ba"],
        tmp_path, monkeypatch, capsys)
    checkpoints = store.list("runs/gcs/checkpoints/")
    assert "runs/gcs/checkpoints/ep0-ba2-rank0.pt" in checkpoints, checkpoints
    assert "runs/gcs/checkpoints/metrics.jsonl" in checkpoints  # the metrics file beside them

    # The same command again with autoresume and one more step: it resumes from the gs:// checkpoint.
    out = run(train_main, [QUICKSTART, "run_name=gcs", *TINY, *train_data, f"save_folder={save_folder}",
                           "save_interval=1ba", "max_duration=3ba", "autoresume=true"], tmp_path, monkeypatch, capsys)
    assert "resumed run gcs from gs://" in out and "runs/gcs/checkpoints/ep1-ba3-rank0.pt" in \
        store.list("runs/gcs/checkpoints/"), out

    weights = f"gs://{gcs_bucket}/runs/gcs/checkpoints/latest-rank0.pt"  # Composer's remote pointer
    out = run(eval_main, [QUICKSTART, "run_name=gcs", *TINY, *eval_data, "--weights", weights, "--kind", "composer",
                  "--output", str(tmp_path / "metrics.json")], tmp_path, monkeypatch, capsys)
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    # The checkpoint names the data it was trained on, with the conversion report read from gs://.
    assert evaluated["checkpoint"]["trained_on"]["train"][0]["report"]["samples_written"] == 8, out

    model = build_model(weights, "composer", size="small", hidden_size=32, num_layers=2, num_heads=2, ffn_size=64,
                        vl_ffn_start=1)
    report = load_weights_into(model, "composer", weights)  # what init_from does with a gs:// path
    assert str(report) == "exact match", report  # every weight of the gs:// checkpoint, no key left over

    # The next pre-training stage, chained as the README's stages are (load_path, weights only).
    stage2 = [QUICKSTART, "run_name=gcs-stage2", *TINY, *train_data, f"save_folder={save_folder}", "save_interval=2ba",
              f"load_path={weights}", "load_weights_only=true", "load_strict_model_weights=true"]
    out = run(train_main, stage2, tmp_path, monkeypatch, capsys)
    assert f"loaded weights from {weights}" in out and "2 steps in this process" in out, out
    stage2_latest = f"gs://{gcs_bucket}/runs/gcs-stage2/checkpoints/latest-rank0.pt"
    assert "runs/gcs-stage2/checkpoints/ep0-ba2-rank0.pt" in store.list("runs/gcs-stage2/checkpoints/")

    # A shipped fine-tune YAML starting from that stage on gs:// (init_from), as the fine-tunes start from stage 3
    # (saving its own checkpoint is the same Composer upload as above: left out, one uploader process less).
    finetune = [RETRIEVAL, f"variables.root=gs://{gcs_bucket}", "variables.run=gcs-finetune", "variables.image_size=64",
                "task.model.size=small", "task.model.max_text_len=32", "task.model.drop_path_rate=0.0",
                f"task.init_from.path={stage2_latest}", "precision=fp32", "device=cpu",
                "device_train_microbatch_size=4", "train_loader.dataset.randaugment=false",
                *TINY, *train_data, "save_folder=null", "autoresume=false"]
    out = run(train_main, finetune, tmp_path, monkeypatch, capsys)
    assert "run gcs-finetune: 2 steps in this process" in out, out
