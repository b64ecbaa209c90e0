"""``python -m vlmo_composer.export SOURCE OUT``: an exported folder (a Hub repository as it is), optionally pushed.

SOURCE is what :func:`~vlmo_composer.create_model_and_transforms` takes: a training YAML
(its latest checkpoint, or ``--checkpoint``; dotted overrides after it), an exported folder,
a pretrained name, ``hf-hub:org/name``, or a weights file with ``--size``. OUT receives
``model.safetensors``, ``config.json``, the tokenizer files, ``answer_vocab.json`` when
known and the ``README.md`` model card (with a training YAML: the run's config, data and
last evaluation). ``--push-to-hub ORG/NAME`` then uploads OUT with ``huggingface_hub``
(``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from vlmo_composer.checkpoints.hub import push_folder
from vlmo_composer.checkpoints.sources import add_weight_source_options
from vlmo_composer.inference.helpers import VLMoInference


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmo_composer.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="training YAML, exported folder, pretrained name, hf-hub:ORG/NAME or file")
    parser.add_argument("out", help="the folder to write (a Hub model repository)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of a training YAML (key=value)")
    parser.add_argument("--checkpoint", help="a training YAML's Composer checkpoint (default: its latest)")
    add_weight_source_options(parser, size_help="named size for a weights file (base, large, ...)")
    parser.add_argument("--timm", action="store_true", help="also write the vision tower as a timm BEiT")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload OUT to this Hub model repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository private")
    args = parser.parse_args(argv)
    try:
        if args.source.endswith((".yaml", ".yml")):
            model = VLMoInference.from_training_config(args.source, args.checkpoint, args.overrides,
                                                       weights=args.weights_set)
        else:
            if args.overrides or args.checkpoint:
                raise ValueError("overrides and --checkpoint go with a training YAML")
            model = VLMoInference.from_pretrained(args.source, kind=args.kind, size=args.size,
                                                  weights=args.weights_set)
        folder = model.export(args.out, overwrite=args.overwrite, timm=args.timm)
    except (FileNotFoundError, FileExistsError, ValueError, PermissionError) as err:
        print(f"export error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    if args.push_to_hub:
        try:
            url = push_folder(folder, args.push_to_hub, private=args.private)
        except Exception as err:  # no token, no network, no rights: one line, the folder stays
            line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"export error: pushing {folder} to {args.push_to_hub} failed: {line}", file=sys.stderr)
            return 2
        print(f"pushed to https://huggingface.co/{args.push_to_hub} ({url})")
    return 0
