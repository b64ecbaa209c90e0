"""The streaming datasets over real MDS shards written by the tests."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from data_helpers import image_bytes, write_mds
from vlmo_composer.data.datasets import (
    ImageDataset,
    ImageTextDataset,
    NLVR2Dataset,
    TextDataset,
    VQADataset,
)
from vlmo_composer.data.schema import IMAGE_LABELED, IMAGE_TEXT, NLVR2, TEXT, VQA

NUM_IMAGES = 24


def image_text_rows(n: int = NUM_IMAGES, corrupt: tuple[int, ...] = ()) -> list[dict]:
    rows = []
    for i in range(n):
        data = image_bytes(40, 30, seed=i)
        if i in corrupt:
            data = b"not a jpeg" if i % 2 else data[: len(data) // 3]  # garbage, or a truncated file
        captions = [f"image {i} caption {k} of a little scene" for k in range(1 + i % 4)]
        rows.append(
            dict(image=data, captions=captions, image_id=f"img{i}", source="test", width=40, height=30)
        )
    return rows


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    write_mds(root / "image_text", IMAGE_TEXT, image_text_rows())
    write_mds(root / "corrupt", IMAGE_TEXT, image_text_rows(16, corrupt=(3, 9)))
    write_mds(root / "text", TEXT, [{"text": f"document {i} " + "word " * (30 * i)} for i in range(12)])
    write_mds(
        root / "image_labeled",
        IMAGE_LABELED,
        [{"image": image_bytes(seed=i), "label": i % 5} for i in range(12)],
    )
    write_mds(
        root / "vqa",
        VQA,
        [
            dict(
                image=image_bytes(seed=i),
                question=f"what is in image {i}?",
                question_id=1000 + i,
                image_id=str(i),
                answers=["cat"] * (10 - i % 3) + ["a cat"] * (i % 2),
                labels=[i % 7, (i + 1) % 7],
                scores=[1.0, 0.3],
            )
            for i in range(12)
        ],
    )
    write_mds(
        root / "nlvr2",
        NLVR2,
        [
            dict(
                image_0=image_bytes(seed=i),
                image_1=image_bytes(seed=i),
                sentence=f"both images show {i} dogs",
                label=i % 2,
                identifier=f"dev-{i}-0-0",
            )
            for i in range(8)
        ],
    )
    return root


def _collect(ds, num_workers: int = 0, batch_size: int = 4) -> list[dict]:
    return list(DataLoader(ds, batch_size=batch_size, num_workers=num_workers))


def _by_index(batches: list[dict], key: str) -> dict[int, torch.Tensor]:
    return {int(i): b[key][j] for b in batches for j, i in enumerate(b["sample_index"])}


def _image_text(shards, local_dir, **kw) -> ImageTextDataset:
    kw = {"image_size": 32, "max_text_len": 40, "batch_size": 4, "shuffle": True, "shuffle_seed": 7, **kw}
    return ImageTextDataset(remote=str(shards / "image_text"), local=local_dir(), **kw)


def test_image_text_batch(shards, local_dir):
    batch = _collect(_image_text(shards, local_dir))[0]
    assert set(batch) == {
        "pixel_values",
        "input_ids",
        "attention_mask",
        "mlm_input_ids",
        "mlm_labels",
        "sample_index",
        "corrupt_skipped",
    }
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    for key in ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels"):
        assert batch[key].shape == (4, 40) and batch[key].dtype == torch.long, key
    assert batch["sample_index"].dtype == torch.long and batch["sample_index"].shape == (4,)
    assert (batch["corrupt_skipped"] == 0).all()
    assert (batch["mlm_labels"] != -100).any()

    no_mlm = _collect(_image_text(shards, local_dir, mlm_prob=0.0))[0]
    assert "mlm_input_ids" not in no_mlm and "mlm_labels" not in no_mlm


def test_all_captions_mode_for_retrieval(shards, local_dir):
    ds = _image_text(
        shards, local_dir, train=False, mlm_prob=0.0, captions="all", max_captions=4, shuffle=False
    )
    batch = _collect(ds)[0]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 4, 40)
    assert batch["caption_mask"].tolist() == [[k < 1 + i % 4 for k in range(4)] for i in range(4)]
    # Padding rows are the empty caption ([CLS] [SEP]): safe to encode, dropped with caption_mask.
    assert (batch["attention_mask"][~batch["caption_mask"]].sum(-1) == 2).all()
    with pytest.raises(ValueError, match="has 4 captions, more than max_captions=3"):
        _image_text(shards, local_dir, train=False, mlm_prob=0.0, captions="all", max_captions=3)[3]
    with pytest.raises(ValueError, match="set mlm_prob=0"):
        _image_text(shards, local_dir, captions="all")


def test_caption_and_augmentation_are_drawn_per_visit(shards, local_dir):
    ds = _image_text(shards, local_dir)
    epochs = [_collect(ds) for _ in range(2)]
    assert ds.epoch == 1
    ids = [_by_index(batches, "input_ids") for batches in epochs]
    pixels = [_by_index(batches, "pixel_values") for batches in epochs]
    assert sorted(ids[0]) == sorted(ids[1]) == list(range(NUM_IMAGES))
    assert all(not torch.equal(pixels[0][i], pixels[1][i]) for i in range(NUM_IMAGES))
    multi = [i for i in range(NUM_IMAGES) if i % 4]  # images with several captions
    changed = sum(not torch.equal(ids[0][i], ids[1][i]) for i in multi)
    assert 0 < changed < len(multi)

    # Every caption of a 4-caption image shows up over a few epochs.
    tok = ds.tokenizer
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        seen.add(tok.decode(ds[3]["input_ids"], skip_special_tokens=True))
    assert seen == {f"image 3 caption {k} of a little scene" for k in range(4)}

    # Evaluation datasets draw the same way in every pass.
    ev = _image_text(shards, local_dir, train=False)
    first, second = _collect(ev), _collect(ev)
    for key in ("input_ids", "pixel_values", "mlm_input_ids"):
        a, b = _by_index(first, key), _by_index(second, key)
        assert all(torch.equal(a[i], b[i]) for i in a), key


def test_same_seed_epoch_index_gives_the_same_sample_anywhere(shards, local_dir, tmp_path):
    ds = _image_text(shards, local_dir)
    epochs = [_collect(ds) for _ in range(2)]

    # A new dataset (new local cache), random access at epoch 1.
    fresh = _image_text(shards, local_dir)
    fresh.set_epoch(1)
    for key in ("pixel_values", "input_ids", "mlm_input_ids", "mlm_labels"):
        expected = _by_index(epochs[1], key)
        assert all(torch.equal(fresh[i][key], expected[i]) for i in expected), key

    # Two DataLoader workers split the samples differently but produce the same ones.
    workers = _by_index(_collect(_image_text(shards, local_dir), num_workers=2), "pixel_values")
    single = _by_index(epochs[0], "pixel_values")
    assert sorted(workers) == sorted(single)
    assert all(torch.equal(workers[i], single[i]) for i in single)

    # Another process.
    script = tmp_path / "other_process.py"
    script.write_text(
        "import sys, torch\n"
        "from vlmo_composer.data.datasets import ImageTextDataset\n"
        "ds = ImageTextDataset(remote=sys.argv[1], local=sys.argv[2], image_size=32, max_text_len=40, batch_size=4,\n"
        "                      shuffle=True, shuffle_seed=7)\n"
        "ds.set_epoch(1)\n"
        "torch.save({i: ds[i] for i in range(6)}, sys.argv[3])\n"
    )
    out = tmp_path / "samples.pt"
    subprocess.run(
        [sys.executable, str(script), str(shards / "image_text"), local_dir(), str(out)],
        check=True,
        timeout=120,
    )
    other = torch.load(out)
    expected = {key: _by_index(epochs[1], key) for key in ("pixel_values", "input_ids", "mlm_labels")}
    for i in range(6):
        for key, values in expected.items():
            assert torch.equal(other[i][key], values[i]), (i, key)


def test_resuming_mid_epoch_reproduces_the_uninterrupted_batches(shards, local_dir):
    batch_size, done = 4, 3
    reference = _image_text(shards, local_dir)
    uninterrupted = [_collect(reference, batch_size=batch_size) for _ in range(2)]

    # Run epoch 0, stop after `done` batches of epoch 1 and checkpoint the dataset position.
    first = _image_text(shards, local_dir)
    _collect(first)
    loader = iter(DataLoader(first, batch_size=batch_size))
    for _ in range(done):
        next(loader)
    state = first.state_dict(num_samples=done * batch_size, from_beginning=False)
    assert state["epoch"] == 1

    resumed = _image_text(shards, local_dir)
    resumed.load_state_dict(state)
    rest = _collect(resumed, batch_size=batch_size)
    assert len(rest) == len(uninterrupted[1]) - done
    for got, want in zip(rest, uninterrupted[1][done:]):
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), key


def test_corrupt_samples_are_skipped_and_counted(shards, local_dir, caplog):
    remote = str(shards / "corrupt")
    ds = ImageTextDataset(remote=remote, local=local_dir(), image_size=32, max_text_len=40, batch_size=4, shuffle=False)
    with caplog.at_level(logging.WARNING, logger="vlmo_composer.data.datasets"):
        batches = _collect(ds)
    assert [len(b["sample_index"]) for b in batches] == [4, 4, 4, 4]
    indices = [i for b in batches for i in b["sample_index"].tolist()]
    assert indices == [0, 1, 2, 4, 4, 5, 6, 7, 8, 10, 10, 11, 12, 13, 14, 15]  # 3 and 9 replaced by the next
    assert sum(int(b["corrupt_skipped"].sum()) for b in batches) == 2 == ds.num_corrupt_samples
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "skipping corrupt sample 3 of stream " + remote in m and "cannot decode image" in m for m in messages
    )
    assert any("skipping corrupt sample 9 of stream " + remote in m for m in messages)


def test_a_broken_shard_raises_instead_of_skipping_forever(tmp_path, local_dir):
    write_mds(tmp_path / "broken", IMAGE_TEXT, image_text_rows(70, corrupt=tuple(range(70))))
    ds = ImageTextDataset(remote=str(tmp_path / "broken"), local=local_dir(), image_size=32, max_text_len=40)
    with pytest.raises(RuntimeError, match="65 consecutive corrupt samples"):
        ds[0]


def test_wrong_schema_is_rejected_naming_the_stream(shards, local_dir):
    with pytest.raises(ValueError, match=r"lacks columns \['captions', 'image'\]") as info:
        ImageTextDataset(remote=str(shards / "text"), local=local_dir(), image_size=32, max_text_len=40)
    assert str(shards / "text") in str(info.value)


def test_text_dataset(shards, local_dir):
    ds = TextDataset(remote=str(shards / "text"), local=local_dir(), max_text_len=196, batch_size=4)
    batch = _collect(ds)[-1]
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "mlm_input_ids",
        "mlm_labels",
        "sample_index",
        "corrupt_skipped",
    }
    assert batch["input_ids"].shape == (4, 196)
    assert batch["attention_mask"].all()  # the long documents are truncated to 196 tokens
    assert ((batch["mlm_labels"] != -100).sum(1) == 29).all()  # 0.15 * 196 single-token words


def test_image_dataset_with_labels_and_mim_mask(shards, local_dir):
    ds = ImageDataset(
        remote=str(shards / "image_labeled"),
        local=local_dir(),
        image_size=32,
        patch_size=8,
        with_labels=True,
        mim_num_patches=6,
        mim_min_patches=2,
        batch_size=4,
    )
    batch = _collect(ds)[0]
    assert set(batch) == {"pixel_values", "mim_mask", "label", "sample_index", "corrupt_skipped"}
    assert batch["mim_mask"].shape == (4, 16) and batch["mim_mask"].dtype == torch.bool
    assert (batch["mim_mask"].sum(1) <= 6).all() and batch["mim_mask"].sum() > 12
    assert batch["label"].tolist() == [i % 5 for i in batch["sample_index"].tolist()]
    assert torch.equal(ds[1]["mim_mask"], ds[1]["mim_mask"])

    plain = ImageDataset(remote=str(shards / "image_labeled"), local=local_dir(), image_size=32)
    assert set(plain[0]) == {"pixel_values", "sample_index", "corrupt_skipped"}


def test_vqa_dataset_targets(shards, local_dir):
    ds = VQADataset(remote=str(shards / "vqa"), local=local_dir(), num_labels=7, image_size=32, max_text_len=40, batch_size=4)
    batch = _collect(ds)[0]
    assert set(batch) == {
        "pixel_values",
        "input_ids",
        "attention_mask",
        "vqa_targets",
        "question_id",
        "answers_json",
        "sample_index",
        "corrupt_skipped",
    }
    assert batch["vqa_targets"].shape == (4, 7) and batch["vqa_targets"].dtype == torch.float32
    for row, i in enumerate(batch["sample_index"].tolist()):
        expected = torch.zeros(7)
        expected[i % 7], expected[(i + 1) % 7] = 1.0, 0.3
        assert torch.equal(batch["vqa_targets"][row], expected)
        assert batch["question_id"][row].item() == 1000 + i
        # The raw annotator answers for the official accuracy; rows with different numbers of
        # answers (8 to 11 here) still collate.
        assert json.loads(batch["answers_json"][row]) == ["cat"] * (10 - i % 3) + ["a cat"] * (i % 2)

    too_small = VQADataset(remote=str(shards / "vqa"), local=local_dir(), num_labels=6, image_size=32, max_text_len=40)
    with pytest.raises(
        ValueError, match=r"question 1005 \(sample 5\) has answer labels \[6\] outside \[0, 6\)"
    ):
        too_small[5]


def test_nlvr2_dataset(shards, local_dir):
    ds = NLVR2Dataset(remote=str(shards / "nlvr2"), local=local_dir(), image_size=32, max_text_len=40, batch_size=4)
    batch = _collect(ds)[0]
    assert set(batch) == {
        "pixel_values_0",
        "pixel_values_1",
        "input_ids",
        "attention_mask",
        "label",
        "identifier",
        "sample_index",
        "corrupt_skipped",
    }
    assert batch["pixel_values_0"].shape == batch["pixel_values_1"].shape == (4, 3, 32, 32)
    assert batch["identifier"] == [f"dev-{i}-0-0" for i in batch["sample_index"].tolist()]
    assert batch["label"].tolist() == [i % 2 for i in batch["sample_index"].tolist()]
    # Both sides hold the same image: independent augmentations in training, identical in eval.
    assert all(not torch.equal(a, b) for a, b in zip(batch["pixel_values_0"], batch["pixel_values_1"]))
    ev = NLVR2Dataset(remote=str(shards / "nlvr2"), local=local_dir(), image_size=32, max_text_len=40, train=False)
    assert torch.equal(ev[0]["pixel_values_0"], ev[0]["pixel_values_1"])


@pytest.mark.parametrize("dataset_class, given, missing", [
    (ImageTextDataset, {"max_text_len": 40}, "image_size"),
    (ImageTextDataset, {"image_size": 32}, "max_text_len"),
    (TextDataset, {}, "max_text_len"),
    (ImageDataset, {}, "image_size"),
    (VQADataset, {"num_labels": 7, "max_text_len": 40}, "image_size"),
    (NLVR2Dataset, {"image_size": 32}, "max_text_len"),
])
def test_a_dataset_without_its_shapes_fails_naming_them(shards, local_dir, dataset_class, given, missing):
    """Shapes have one owner, the model config: no dataset falls back on a size of its own."""
    with pytest.raises(TypeError, match=f"missing 1 required keyword-only argument: '{missing}'"):
        dataset_class(remote=str(shards / "image_text"), local=local_dir(), **given)


def test_a_mim_mask_needs_the_models_patch_size(shards, local_dir):
    with pytest.raises(ValueError, match="mim_num_patches needs patch_size"):
        ImageDataset(remote=str(shards / "image_labeled"), local=local_dir(), image_size=32, mim_num_patches=6)
