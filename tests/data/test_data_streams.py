from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import DataLoader

from data_helpers import write_mds
from vlmo_composer.data.datasets import TextDataset
from vlmo_composer.data.schema import TEXT
from vlmo_composer.data.streams import build_streams, derived_local


def test_list_and_mapping_forms(tmp_path):
    streams = build_streams(
        [
            {
                "name": "coco",
                "remote": "s3://bucket/coco",
                "local": str(tmp_path / "coco"),
                "proportion": 0.3,
            },
            {
                "remote": "s3://bucket/cc3m",
                "local": str(tmp_path / "cc3m"),
                "proportion": 0.7,
                "split": "train",
            },
        ]
    )
    assert [s.remote for s in streams] == ["s3://bucket/coco", "s3://bucket/cc3m"]
    assert [s.proportion for s in streams] == [0.3, 0.7]
    assert streams[1].split == "train" and streams[0].local == str(tmp_path / "coco")

    by_name = build_streams(
        {"sbu": {"remote": "s3://b/sbu", "repeat": 2}, "vg": {"remote": "s3://b/vg", "choose": 10}},
        cache_root=tmp_path / "cache",
    )
    assert by_name[0].repeat == 2 and by_name[1].choose == 10


def test_derived_local_cache_is_stable_and_distinct(tmp_path):
    a = build_streams([{"remote": "s3://bucket/a/train"}], cache_root=tmp_path)[0].local
    again = build_streams([{"remote": "s3://bucket/a/train"}], cache_root=tmp_path)[0].local
    b = build_streams([{"remote": "s3://bucket/b/train"}], cache_root=tmp_path)[0].local
    assert a == again != b
    assert a.startswith(str(tmp_path)) and "train-" in a
    assert derived_local("s3://x/y", tmp_path, namespace="eval") != derived_local(
        "s3://x/y", tmp_path, "train"
    )


@pytest.mark.parametrize(
    "cfgs, message",
    [
        (
            [{"remote": "s3://a", "proportion": 0.5}, {"remote": "s3://b", "repeat": 2}],
            r"\['streams\[0\]'\] use 'proportion' but \['streams\[1\]'\] do not",
        ),
        (
            {"coco": {"remote": "s3://a", "proportion": 0.5, "repeat": 2}},
            r"stream 'coco' sets \['proportion', 'repeat'\]",
        ),
        ({"coco": {"remote": "s3://a", "weight": 2}}, r"stream 'coco': unknown keys \['weight'\]"),
        ({"coco": {"split": "train"}}, r"stream 'coco': give 'remote'"),
        (
            {"coco": {"remote": "s3://a", "local": "/tmp/x"}, "vg": {"remote": "s3://b", "local": "/tmp/x/"}},
            r"streams 'coco' and 'vg' share the local directory /tmp/x",
        ),
        ({"coco": {"remote": "s3://a", "repeat": -1}}, r"stream 'coco': `repeat` must be non-negative"),
        ([], "streams is empty"),
    ],
)
def test_misconfigured_streams_fail_naming_the_stream(cfgs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        build_streams(cfgs, cache_root=tmp_path)


def test_same_local_with_different_splits_is_allowed(tmp_path):
    streams = build_streams(
        [
            {"remote": "s3://a", "local": str(tmp_path), "split": "train"},
            {"remote": "s3://a", "local": str(tmp_path), "split": "val"},
        ]
    )
    assert len(streams) == 2


def test_proportion_mixing_yields_the_expected_ratio(tmp_path, local_dir):
    for name in ("a", "b"):
        write_mds(
            tmp_path / name, TEXT, [{"text": f"{name} document {i}"} for i in range(40)], size_limit=1 << 10
        )
    streams = build_streams(
        {
            "a": {"remote": str(tmp_path / "a"), "local": local_dir(), "proportion": 0.75},
            "b": {"remote": str(tmp_path / "b"), "local": local_dir(), "proportion": 0.25},
        }
    )
    ds = TextDataset(
        streams=streams,
        epoch_size=400,
        batch_size=8,
        shuffle=True,
        shuffle_seed=3,
        max_text_len=8,
        mlm_prob=0.0,
    )
    assert len(ds) == 400
    first_b = ds.sample_offset_per_stream[1]
    seen = Counter()
    for batch in DataLoader(ds, batch_size=8):
        seen.update("a" if i < first_b else "b" for i in batch["sample_index"].tolist())
    assert sum(seen.values()) == 400
    assert abs(seen["a"] - 300) <= 4 and abs(seen["b"] - 100) <= 4


def test_a_dataset_retried_after_a_shared_memory_race_gets_new_streams(tmp_path, local_dir, monkeypatch):
    """Two jobs of one node creating datasets at once can pick the same Streaming shared-memory
    prefix; the loser retries. Streaming writes the derived weights into the Stream objects
    (``apply_weights``) before it picks the prefix, so a retry with the same objects failed
    ("at most one of `proportion`, `repeat`, or `choose`"), as a two-node launch on one host showed."""
    import numpy as np
    from streaming import Stream

    from vlmo_composer.training.config import LoaderConfig
    from vlmo_composer.data import loaders

    for name in ("a", "b"):
        write_mds(tmp_path / name, TEXT, [{"text": f"{name} document {i}"} for i in range(8)])
    attempts = []

    class LosesTheFirstRace(TextDataset):
        def __init__(self, **kwargs):
            attempts.append([id(s) for s in kwargs["streams"]])
            if len(attempts) == 1:  # what StreamingDataset.__init__ does before get_shm_prefix, then the race
                Stream.apply_weights(kwargs["streams"], np.array([8, 8]), None, 0)
                raise FileExistsError(17, "File exists", "/000001_locals")
            super().__init__(**kwargs)

    monkeypatch.setattr(loaders, "check_dataset_arguments", lambda cfg, where: LosesTheFirstRace)
    cfg = LoaderConfig(name="text", dataset={"max_text_len": 8, "mlm_prob": 0.0, "streams": {
        "a": {"remote": str(tmp_path / "a"), "local": local_dir(), "proportion": 0.5},
        "b": {"remote": str(tmp_path / "b"), "local": local_dir(), "proportion": 0.5}}})
    dataset = loaders.build_dataset(cfg, 4, "train_loader", "run/train")
    assert len(attempts) == 2 and not set(attempts[0]) & set(attempts[1])
    assert len(dataset) == 16
