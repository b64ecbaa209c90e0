"""The Hugging Face Hub: an export is a Hub repository as it is (model card included), ``hf-hub:org/name``
loads it through huggingface_hub's cache offline, and the push command fails in one line without a Hub."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch
from hub_cache import hub_cache, offline_cache
from inference_helpers import ANSWERS, CAPTIONS, TINY_SHAPE
from PIL import Image

from data_prep import convert_karpathy
from vlmo_composer import VLMo, VLMoInference, create_model_and_transforms, get_tokenizer
from vlmo_composer.checkpoints.sources import fetch_source, load_weights_into
from vlmo_composer.data.provenance import data_provenance
from vlmo_composer.data.tokenizer import get_tokenizer as bert_tokenizer
from vlmo_composer.inference.export_cli import main as export_main
from vlmo_composer.inference.factory import export_model
from vlmo_composer.inference.model_card import RunSource
from vlmo_composer.training.dry_run import check_checkpoint_to_load


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20 + seed, 16), (40 * seed % 256, 90, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_run(root: Path) -> Path:
    """A tiny run's files: COCO-style data converted by data_prep (one corrupt image skipped, one empty
    caption dropped), a training YAML reading it, and the run's metrics.jsonl (lines as MetricsFile writes)."""
    entries = []
    for i, (split, captions, data) in enumerate([("train", ["a red square", ""], jpeg(1)),
                                                 ("train", ["a blue circle"], jpeg(2)),
                                                 ("train", ["corrupt"], b"\xff\xd8 not a jpeg"),
                                                 ("test", ["a green cone"], jpeg(3))]):
        name = f"COCO_val2014_{i:012d}.jpg"
        (root / "coco" / "val2014").mkdir(parents=True, exist_ok=True)
        (root / "coco" / "val2014" / name).write_bytes(data)
        entries.append({"filepath": "val2014", "filename": name, "split": split, "cocoid": i,
                        "sentences": [{"raw": c} for c in captions]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    convert_karpathy.main(["--dataset", "coco", "--json", str(root / "dataset_coco.json"), "--images",
                           str(root / "coco"), "--out", str(root / "mds"), "--num-workers", "1", "--no-progress"])
    shape = "\n".join(f"    {k}: {v}" for k, v in TINY_SHAPE.items())
    yaml = root / "tiny.yaml"
    yaml.write_text(f"""run_name: tiny
task:
  name: vl_pretrain
  model:
    size: small
{shape}
    vl_ffn_start: 1
    image_size: 32
    max_text_len: 16
train_loader:
  name: image_text
  dataset: {{local: {root}/mds/train}}
eval_loaders:
  - label: test
    name: image_text
    dataset: {{local: {root}/mds/test, train: false, captions: all, mlm_prob: 0.0}}
    num_workers: 0
optimizer: {{name: adamw, lr: 1.0e-4}}
scheduler: {{name: constant_with_warmup, t_warmup: 1ba}}
max_duration: 1ep
global_train_batch_size: 2
save_folder: {root}/runs/{{run_name}}/checkpoints
""")
    metrics = root / "runs/tiny/checkpoints/metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    lines = [{"batch": 1, "epoch": 0, "sample": 2, "loss/train/total": 2.5},
             {"batch": 1, "epoch": 1, "sample": 2, "metrics/test/RetrievalRecall/tr_r1": 0.5},
             {"batch": 2, "epoch": 1, "sample": 4, "metrics/test/RetrievalRecall/tr_r1": 1.0,
              "metrics/test/RetrievalRecall/ir_r1": 0.75}]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return yaml


@pytest.fixture(scope="module")
def exported(full_model, tmp_path_factory) -> tuple[Path, Path]:
    """``(export folder, the run's YAML)``: the tiny model exported with the run it came from."""
    root = tmp_path_factory.mktemp("hub")
    yaml = make_run(root)
    folder = export_model(full_model, root / "export", bert_tokenizer(), ANSWERS, run=RunSource(str(yaml)))
    return folder, yaml


def test_export_folder_is_a_hub_repository_with_its_model_card(exported, full_model):
    folder, yaml = exported
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= names
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: vlmo-composer" in front and "pipeline_tag: zero-shot-image-classification" in front
    assert "license" not in front  # not known for a user's run: not claimed
    config = full_model.config
    for row in (f"| layers | {config.num_layers} (VL-FFN from block 1) |", f"| hidden | {config.hidden_size} (FFN",
                f"| attention heads | {config.num_heads} |", "| image size | 32 px, patch 16 |",
                "| text length | 16 tokens", "ITC, VL-branch ITC, ITM, MLM, NLVR2, VQA (5 answers)",
                "| answer vocabulary | 5 answers"):
        assert row in body, row
    assert f"From `{yaml}`" in body and "name: vl_pretrain" in body and "max_duration: 1ep" in body
    # The data: data_prep's conversion reports, as the run read each stream.
    assert f"| train | dataset | `{yaml.parent}/mds/train` | train | 2 of 3 records | 1 corrupt_image | " \
           "1 empty_caption |" in body
    assert f"| eval: test | dataset | `{yaml.parent}/mds/test` | test | 1 of 1 records | 0 | 0 |" in body
    # The last evaluation of the run's metrics.jsonl, not an earlier one nor a training line.
    assert "(batch 2)" in body and "| metrics/test/RetrievalRecall/tr_r1 | 1.0000 |" in body
    assert "| metrics/test/RetrievalRecall/ir_r1 | 0.7500 |" in body and "loss/train" not in body
    assert f"{yaml.parent}/runs/tiny/checkpoints/latest-rank0.pt" in body


def test_an_export_without_a_run_claims_nothing_about_it(full_model, tmp_path):
    card = (VLMoInference(full_model).export(tmp_path / "plain") / "README.md").read_text()
    assert card.count("unknown") == 3 and "## Data" in card and "conversion" not in card
    missing = data_provenance({"local": str(tmp_path / "nowhere")})
    assert missing == [{"stream": "dataset", "location": str(tmp_path / "nowhere"), "report": None}]


@pytest.fixture
def offline_hub(monkeypatch, tmp_path) -> Path:
    """An empty huggingface_hub cache under tmp_path, with downloads off (no network in tests)."""
    return offline_cache(monkeypatch, tmp_path)


def test_hf_hub_name_loads_the_export_from_the_hub_cache(exported, full_model, images, offline_hub):
    folder, _ = exported
    snapshot = hub_cache(offline_hub, "vlmo-org/tiny-vlmo", folder)
    assert fetch_source("hf-hub:vlmo-org/tiny-vlmo") == (str(snapshot), "safetensors")
    model, _, preprocess_val = create_model_and_transforms("hf-hub:vlmo-org/tiny-vlmo")
    tokenizer = get_tokenizer("hf-hub:vlmo-org/tiny-vlmo")
    assert tokenizer.context_length == 16 and model.answers == ANSWERS
    pixels = torch.stack([preprocess_val(im.convert("RGB")) for im in images[:3]])
    reference = VLMoInference(full_model).clip
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), reference.encode_image(pixels))
        assert torch.equal(model.encode_text(tokenizer(CAPTIONS)), reference.encode_text(tokenizer(CAPTIONS)))
    tasks = VLMoInference.from_pretrained("hf-hub:vlmo-org/tiny-vlmo")
    assert torch.equal(tasks.encode_images(images[:3]), VLMoInference(full_model).encode_images(images[:3]))
    # init_from (and eval.py --weights) read weights through the same sources: a training run starts from it.
    start = VLMo(full_model.config)
    assert str(load_weights_into(start, "safetensors", "hf-hub:vlmo-org/tiny-vlmo")) == "exact match"
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), full_model.state_dict().values()))
    assert check_checkpoint_to_load("hf-hub:vlmo-org/tiny-vlmo", "task.init_from.path", None, ()) == []


def test_a_hub_name_not_in_the_cache_fails_in_one_line(offline_hub):
    with pytest.raises(FileNotFoundError, match=r"^hf-hub:vlmo-org/absent: not in the Hugging Face cache") as err:
        fetch_source("hf-hub:vlmo-org/absent")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="hf-hub:ORG/NAME"):
        fetch_source("hf-hub:no-org")


def test_push_to_hub_without_a_hub_fails_in_one_line_and_keeps_the_folder(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    out = tmp_path / "again"
    assert export_main([str(exported[0]), str(out), "--push-to-hub", "vlmo-org/tiny-vlmo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"export error: pushing {out} to vlmo-org/tiny-vlmo failed:") and "\n" not in err
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()


def test_eval_output_records_where_each_split_came_from(exported, tmp_path, capsys):
    from vlmo_composer.evaluation.cli import main as eval_main
    from vlmo_composer.training.builders import resolve_config
    from vlmo_composer.training.config import load_config

    _, yaml = exported
    torch.manual_seed(0)
    weights = export_model(VLMo(resolve_config(load_config(str(yaml))).model), tmp_path / "w", bert_tokenizer())
    out = tmp_path / "eval.json"
    assert eval_main([str(yaml), "--weights", str(weights), "--device", "cpu", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["checkpoint"] == {"path": str(weights), "kind": "safetensors"}
    assert results["provenance"] == {"test": [{
        "stream": "dataset", "location": f"{yaml.parent}/mds/test",
        "report": {"split": "test", "schema": "image_text", "written_to": f"{yaml.parent}/mds/test", "records": 1,
                   "samples_written": 1, "skipped": {}, "dropped": {}}}]}
    assert "provenance" not in capsys.readouterr().out  # the table shows splits, not this record


def test_a_checkpoint_records_its_data_and_the_export_command_writes_the_runs_card(exported, tmp_path):
    from vlmo_composer.training.train import main as train_main

    _, yaml = exported
    folder = tmp_path / "ckpt"
    assert train_main([str(yaml), "max_duration=1ba", "eval_interval=1ba", f"save_folder={folder}",
                       "save_interval=1ba", "train_loader.num_workers=0", "train_loader.dataset.shuffle=false"]) == 0
    state = torch.load(folder / "latest-rank0.pt", map_location="cpu", weights_only=False)["state"]
    record = state["callbacks"]["DataProvenance"]
    train = record["train"][0]["report"]
    assert record["train"][0]["location"] == f"{yaml.parent}/mds/train"
    assert (train["samples_written"], train["skipped"], train["dropped"]) == (2, {"corrupt_image": 1},
                                                                               {"empty_caption": 1})
    assert record["eval"]["test"][0]["report"]["samples_written"] == 1
    # eval.py on that checkpoint: its --output names the checkpoint, its step and that record.
    from vlmo_composer.evaluation.cli import main as eval_main

    weights, out = folder / "latest-rank0.pt", tmp_path / "eval.json"
    assert eval_main([str(yaml), "--weights", str(weights), "--kind", "composer", "--device", "cpu",
                      "--output", str(out)]) == 0
    evaluated = json.loads(out.read_text())["checkpoint"]
    assert evaluated == {"path": str(weights), "kind": "composer", "batch": 1, "trained_on": record}
    # The export command on that run: its real metrics.jsonl gives the card's evaluation.
    out = tmp_path / "card"
    assert export_main([str(yaml), str(out), f"save_folder={folder}"]) == 0
    card = (out / "README.md").read_text()
    assert f"checkpoint `{folder}/latest-rank0.pt` (batch 1)" in card and f"overrides: save_folder={folder}" in card
    assert "| train | dataset |" in card and "1 corrupt_image" in card
    assert "The last evaluation in the run's `metrics.jsonl` (batch 1)" in card
    assert "| metrics/test/RetrievalRecall/tr_r1 |" in card


@pytest.mark.s3
def test_provenance_reads_a_report_on_s3_and_says_unknown_where_there_is_none(exported, s3_bucket):
    import boto3

    _, yaml = exported
    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    client.put_object(Bucket=s3_bucket, Key="mds/train/conversion_report.json",
                      Body=(yaml.parent / "mds/train/conversion_report.json").read_bytes())
    found, missing = data_provenance({"streams": {"coco": {"remote": f"s3://{s3_bucket}/mds", "split": "train"},
                                                  "vg": {"remote": f"s3://{s3_bucket}/vg"}}})
    assert found["stream"] == "coco" and found["location"] == f"s3://{s3_bucket}/mds/train"
    assert (found["report"]["samples_written"], found["report"]["skipped"]) == (2, {"corrupt_image": 1})
    assert missing == {"stream": "vg", "location": f"s3://{s3_bucket}/vg", "report": None}
