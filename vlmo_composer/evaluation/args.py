"""``eval.py``'s command line, parsed before torch and Composer are imported.

``eval.py --help``, a bad flag and a YAML that does not exist are answered here in
a fraction of a second; :mod:`vlmo_composer.evaluation.cli` parses the same way.
The ``--weights PATH --kind KIND`` flags are shared with ``eval.py zeroshot``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from vlmo_composer.training.usage import config_problem

# Old flags, each naming one kind: accepted with a deprecation message.
# Composer checkpoints of a run with EMA hold two sets (checkpoints/sources.py); kept in step by a test.
WEIGHT_SETS = ("ema", "raw")
DEPRECATED_FLAGS = {"checkpoint": "composer", "official": "official", "exported": "safetensors"}

DESCRIPTION = """\
Evaluate weights on a training YAML's eval_loaders with its task's evaluator and print
the paper-style table (--output writes the numbers as JSON). VQA: --vqa-submission FILE
--split test-dev writes the VQA server's results file instead.

The weights are the run's own latest Composer checkpoint (latest-rank0.pt in its
save_folder) unless --weights PATH [--kind official|safetensors|composer] names
others, local or s3://.

Other commands:
  python eval.py zeroshot --help     zero-shot image classification of an image-folder split
  python eval.py vqa-score --help    the official VQA scoring of a results file"""

EPILOG = """\
examples (README):
  python eval.py yamls/finetune/retrieval_coco_base.yaml --rerank-k 16
  python eval.py yamls/finetune/vqa_base.yaml --vqa-submission vqa_test_dev.json --split test-dev
  python eval.py yamls/finetune/nlvr2_base.yaml --weights vlmo_base_patch16_384_nlvr2.pt --kind official"""


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """``--weights PATH --kind KIND`` (one vocabulary), plus the deprecated one-kind flags."""
    parser.add_argument("--weights", help="weights to evaluate: a file or folder, local or s3://, an https:// "
                        "file or a pretrained name (see --list-pretrained)")
    parser.add_argument("--list-pretrained", action="store_true", help="print the pretrained names and exit")
    parser.add_argument("--kind", help="what --weights is: official | safetensors | composer "
                        "(default: a folder is safetensors, a file official; name composer for our checkpoints)")
    parser.add_argument("--weights-set", choices=WEIGHT_SETS, default=None,
                        help="which weights of a Composer checkpoint of a run with EMA: ema (the default when "
                        "it has them) or raw (the training weights)")
    for flag, kind in DEPRECATED_FLAGS.items():
        parser.add_argument(f"--{flag}", help=f"deprecated: --weights PATH --kind {kind}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval.py", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the YAML whose task and eval_loaders to use")
    parser.add_argument("overrides", nargs="*", help="dotted key.path=value overrides")
    add_weights_args(parser)
    parser.add_argument("--rerank-k", type=int, default=0,
                        help="ITM re-rank each query's top-k (retrieval; past k the dual-encoder order stays)")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--vqa-submission", help="VQA: write [{question_id, answer}] for --split here, "
                        "instead of evaluating")
    parser.add_argument("--split", help="with --vqa-submission: the loader label to predict on (test-dev, test)")
    parser.add_argument("--allow-answers", action="store_true",
                        help="with --vqa-submission: accept a split whose questions have answers (val)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--dry-run", action="store_true", help="check, count the data and describe; evaluate nothing")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options (README: ... --rerank-k 16 $T)
    if args.vqa_submission and not args.split:
        parser.error("--vqa-submission needs --split LABEL: the unlabelled split to predict on (test-dev or test)")
    return args


def early_answer(argv: list[str]) -> Optional[int]:
    """For ``eval.py <config.yaml> ...``: argparse answers ``--help`` and bad flags (SystemExit);
    a config that is not there is exit 2 with one line. None when evaluation should go on."""
    args = parse_args(argv)
    problem = config_problem(args.config)
    if problem is not None:
        print(f"eval error: {problem}", file=sys.stderr)
        return 2
    return None
