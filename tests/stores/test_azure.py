"""``azure://`` against Azurite (npm; one per session, skipped when node or Azurite is missing).

As far as the libraries let an endpoint be set: a conversion writes its shards,
``index.json`` and ``answer_vocab.json`` there; weights (``init_from``, ``eval.py
--weights``, ``build_model``) and the answer vocabulary are read from there, all
through :mod:`vlmo_composer.stores` with ``AZURE_STORAGE_CONNECTION_STRING``. Training is
the boundary: Streaming builds ``https://<account>.blob.core.windows.net`` for its
Azure downloader and uploader, and Composer has no ``azure://`` object store, so a
run cannot read shards from, or save checkpoints to, Azurite (README store table).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from inference.inference_helpers import randomised, tiny_config

from vlmo_composer import VLMo, VLMoInference, stores
from vlmo_composer.checkpoints.sources import build_model, load_weights_into


def test_conversion_and_weights_on_azurite(azure_container: str, tmp_path: Path) -> None:
    from data_prep.make_synthetic import main as make_synthetic
    from vlmo_composer.tasks.vqa import load_answers

    root = f"azure://{azure_container}/synthetic"
    make_synthetic(["--out", root, "--train", "4", "--val", "2", "--test", "2", "--image-size", "32", "--no-progress"])
    store, _ = stores.open_store(root)
    index = json.loads(store.read_bytes("synthetic/image_text/train/index.json"))
    shards = [(s["zip_data"] or s["raw_data"])["basename"] for s in index["shards"]]
    listed = set(store.list("synthetic/image_text/train/"))
    assert shards and all(f"synthetic/image_text/train/{name}" in listed for name in shards), (shards, listed)
    assert load_answers(f"{root}/vqa/answer_vocab.json")
    # A finished conversion run again is recognised as complete (manifest read back from the store).
    make_synthetic(["--out", root, "--train", "4", "--val", "2", "--test", "2", "--image-size", "32", "--no-progress"])

    tiny = randomised(VLMo(tiny_config()), seed=3)
    folder = VLMoInference(tiny).export(tmp_path / "export")
    composer = tmp_path / "ep0-ba2-rank0.pt"
    torch.save({"state": {"model": {f"model.{k}": v for k, v in tiny.state_dict().items()}}, "rng": []}, composer)
    for path in folder.iterdir():
        store.upload_file(str(path), f"weights/export/{path.name}")
    store.upload_file(str(composer), "runs/a/checkpoints/ep0-ba2-rank0.pt")
    store.write_bytes("runs/a/checkpoints/latest-rank0.pt.symlink", b"runs/a/checkpoints/ep0-ba2-rank0.pt")

    loaded = build_model(f"azure://{azure_container}/weights/export")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny.state_dict().items())
    target = VLMo(tiny_config())
    load_weights_into(target, "composer", f"azure://{azure_container}/runs/a/checkpoints/latest-rank0.pt")
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in tiny.state_dict().items())
