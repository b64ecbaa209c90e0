"""Zero-shot classification of an image-folder dataset: ``python eval.py zeroshot ...``.

    python eval.py zeroshot --data s3://bucket/mds/imagenet/val --weights exported/vlmo-base
    python eval.py zeroshot --data data/shapes/test --config yamls/quickstart.yaml --templates my_templates.txt

``--data`` is a split written by ``data_prep/convert_images.py`` from class folders
(rows with a ``label``, class names in ``classes.json`` beside the index). Class
names default to that file (``--classes imagenet1k`` or a file overrides them);
templates default to OpenAI's 80 ImageNet ones. Prints and (``--output``) writes
top-1, top-5 and mean per-class recall next to chance. Under ``composer -n N`` each
rank classifies its share of the images (every rank builds the small classifier)
and the logits are gathered: the numbers are one process's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from composer.utils import dist
from torch.utils.data import DataLoader

from vlmo_composer import stores
from vlmo_composer.checkpoints.sources import local_copy
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.data.local_cache import cache_namespace, free_locals
from vlmo_composer.data.provenance import data_provenance
from vlmo_composer.evaluation.args import add_weights_args
from vlmo_composer.evaluation.ranks import gather_by_id, join_ranks
from vlmo_composer.evaluation.weights import chosen_weights
from vlmo_composer.evaluation.zeroshot_classifier import ZeroShotClassifier, zero_shot_metrics

CLASSES_NAME = "classes.json"


def labelled_images(data: str, image_size: int, batch_size: int) -> DataLoader:
    """The dataset's images (eval transform) and labels, in order."""
    from vlmo_composer.data.datasets import ImageDataset

    where = {"local": data}
    if stores.has_scheme(data):  # cached in one directory per node, agreed by its ranks (Streaming needs that)
        where = {"remote": data, "local": free_locals([(data, None)], cache_namespace(None, "zeroshot"))[0]}
    dataset = ImageDataset(**where, image_size=image_size, train=False, randaugment=False, hflip=False,
                           with_labels=True, batch_size=batch_size, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, num_workers=0)


def evaluate_zero_shot(model, classifier: ZeroShotClassifier, loader) -> dict[str, Any]:
    """``model`` is a :class:`~vlmo_composer.inference.VLMoInference`; collective when distributed
    (each rank's images are gathered, each image counted once)."""
    logits, labels, ids = [], [], []
    for batch in loader:
        logits.append(model.classify(batch["pixel_values"], classifier).cpu())
        labels.append(batch["label"])
        ids.append(batch["sample_index"])
    _, all_logits, all_labels = gather_by_id(torch.cat(ids), torch.cat(logits), torch.cat(labels))
    return zero_shot_metrics(all_logits, all_labels)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="eval.py zeroshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a convert_images.py split (local or s3://)")
    parser.add_argument("--classes", help=f"imagenet1k, or a file (default: the dataset's {CLASSES_NAME})")
    parser.add_argument("--templates", default="openai", help="openai (80 templates) or a file, one '{}' per line")
    parser.add_argument("--config", help="a training YAML: its model, with --weights or its latest checkpoint")
    add_weights_args(parser)
    parser.add_argument("--size", help="named size for official/composer files without --config")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", help="write the numbers as JSON here")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return parser.parse_args(argv)


def load_model(args: argparse.Namespace, device: str):
    """The model as a :class:`VLMoInference`; its ``checkpoint`` says what was evaluated (path,
    kind and a Composer checkpoint's step and data), recorded by ``--output`` as ``eval.py``'s."""
    from vlmo_composer.inference import VLMoInference

    if args.config:
        path = None
        if args.weights or args.checkpoint:
            path, kind = chosen_weights(args, None)
            if kind not in ("composer", "auto"):  # a training run's checkpoint is ours
                raise ValueError("--config takes a Composer checkpoint of that run (--kind composer)")
        return VLMoInference.from_training_config(args.config, path, device=device, weights=args.weights_set)
    path, kind = chosen_weights(args, None)
    return VLMoInference.from_pretrained(path, kind=kind, size=args.size, device=device, weights=args.weights_set)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = str(join_ranks(torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))))
    seconds: dict[str, float] = {}
    try:
        start = time.perf_counter()
        model = load_model(args, device)
        seconds["load_s"] = time.perf_counter() - start
        classes = args.classes or local_copy(f"{args.data.rstrip('/')}/{CLASSES_NAME}")
        start = time.perf_counter()
        classifier = model.zero_shot_classifier(classes, args.templates)
        seconds["classifier_s"] = time.perf_counter() - start
        loader = labelled_images(args.data, model.config.image_size, args.batch_size)
    except (ConfigError, FileNotFoundError, KeyError, ValueError, PermissionError) as err:
        print(f"eval zeroshot error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = {"data": args.data, **evaluate_zero_shot(model, classifier, loader),
               "provenance": {"data": data_provenance({"remote": args.data})}}
    seconds["images_s"] = time.perf_counter() - start
    results.update({"weights": args.weights or args.config, "checkpoint": model.checkpoint,
                    "world_size": dist.get_world_size(),
                    **{k: round(v, 3) for k, v in seconds.items()}})
    if dist.get_global_rank() > 0:  # every rank holds the same numbers: rank 0 reports them
        return 0
    print(f"zero-shot classification of {args.data}: {results['num_images']} images, {results['num_classes']} classes")
    print(f"top-1 {results['top1'] * 100:.2f}  top-5 {results['top5'] * 100:.2f}  mean per-class recall "
          f"{results['mean_per_class_recall'] * 100:.2f}  (chance top-1 {results['chance_top1'] * 100:.2f})")
    print(f"time: load {seconds['load_s']:.1f} s; classifier {seconds['classifier_s']:.1f} s "
          f"({results['num_classes']} classes); images {seconds['images_s']:.1f} s "
          f"({results['num_images'] / seconds['images_s']:.1f} images/s) on {dist.get_world_size()} "
          f"rank{'s' if dist.get_world_size() > 1 else ''}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0
