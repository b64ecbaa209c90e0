"""What ITM re-ranking adds to a run's dual encoder, per split and rule (issue 21).

For a training YAML's latest checkpoint, on its image-text test split and the
matching ``val`` split (the synthetic generator writes both): the dual encoder's
mean recall; the shipped re-ranking rule (ITM match logit + cosine on each
query's top k, :mod:`vlmo_composer.evaluation.rerank`); the rule family
``w * ITM log-odds + ITC logit`` (cosine times the model's own ``logit_scale.exp()``,
so both terms are log-odds-like and ``w = 1`` is their plain sum), with ``w``
chosen on val and reported on test; and, per direction, how well each score
orders a query's positives above its negatives among the top k (pairwise AUC
over the queries whose top k holds both; 0.5 is chance).

    python bench/itm_rerank_rules.py yamls/quickstart.yaml [key=value ...] [--k 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlmo_composer.data.loaders import build_dataloader  # noqa: E402
from vlmo_composer.evaluation.rerank import reranked_ranks  # noqa: E402
from vlmo_composer.evaluation.retrieval import collect_features, dual_rankings, itm_rerank  # noqa: E402
from vlmo_composer.evaluation.weights import trained_model  # noqa: E402
from vlmo_composer.metrics import recall_from_ranks  # noqa: E402
from vlmo_composer.training.builders import resolve_config  # noqa: E402
from vlmo_composer.training.config import load_config  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


class ITMColumn:
    """``match_scores`` giving one column of the ITM head's logits (``itm_rerank`` reads one score per pair)."""

    def __init__(self, model, column: int) -> None:
        self.model, self.column = model, column

    def match_scores(self, input_ids, attention_mask, pixel_values) -> torch.Tensor:
        return self.model.itm_logits(self.model.fuse(input_ids, attention_mask, pixel_values).pooled)[:, self.column]


def mean_recall(ranks: list[torch.Tensor]) -> float:
    recalls = recall_from_ranks(*ranks)
    return 100 * sum(recalls.values()) / len(recalls)


def pairwise_auc(scores: torch.Tensor, positive: torch.Tensor) -> tuple[float, int]:
    """Mean over queries with both kinds among their top k of P(positive > negative), ties half."""
    both = torch.nonzero(positive.any(1) & ~positive.all(1)).flatten()
    aucs = []
    for q in both:
        pos, neg = scores[q][positive[q]], scores[q][~positive[q]]
        aucs.append(((pos[:, None] > neg).double() + 0.5 * (pos[:, None] == neg).double()).mean())
    return (float(torch.stack(aucs).mean()) if aucs else float("nan")), len(aucs)


def split_scores(model, loader_cfg, k: int) -> dict:
    """Each direction's dual ranking, positives among the top k, and both ITM logits of those pairs."""
    device = torch.device("cpu")
    factory = lambda: build_dataloader(loader_cfg, 32, train=False, where=loader_cfg.label)  # noqa: E731
    with torch.no_grad():
        feats = collect_features(model, factory(), device)
        tr, ir = dual_rankings(feats, k)
        match = itm_rerank(ITMColumn(model, 1), feats, tr.top_indices, ir.top_indices, factory(), device)
        other = itm_rerank(ITMColumn(model, 0), feats, tr.top_indices, ir.top_indices, factory(), device)
    images = torch.arange(len(feats.image_feats))
    positive = (feats.text_to_image[tr.top_indices] == images[:, None], ir.top_indices == feats.text_to_image[:, None])
    return {"rankings": (tr, ir), "positive": positive, "match": match, "other": other}


def rule_recall(s: dict, rule) -> float:
    ranks = [reranked_ranks(rk.ranks, pos, rule(m.double(), o.double(), rk.top_scores.double()))
             for rk, pos, m, o in zip(s["rankings"], s["positive"], s["match"], s["other"])]
    return mean_recall(ranks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    model, _, _ = trained_model(args.config, None, args.overrides)
    model.eval()
    cfg = load_config(args.config, args.overrides)
    resolve_config(cfg)  # fills the loaders' image size and text length from the model
    test = cfg.eval_loaders[0]
    val_local = str(Path(test.dataset["local"]).parent / "val")
    val = dataclasses.replace(test, label="val", dataset={**test.dataset, "local": val_local})
    scale = float(model.logit_scale.exp())
    print(f"ITC logit scale {scale:.3f}; top k = {args.k}")
    scores = {loader.label: split_scores(model, loader, args.k) for loader in (val, test)}
    rules = {"dual encoder": lambda m, o, c: c,
             "shipped: ITM logit + cosine": lambda m, o, c: m + c,
             "ITM log-odds alone": lambda m, o, c: (m - o) + 1e-9 * c}
    rules.update({f"{w:g} * ITM log-odds + ITC logit": (lambda m, o, c, w=w: w * (m - o) + scale * c) for w in WEIGHTS})
    table = {name: {label: rule_recall(s, rule) for label, s in scores.items()} for name, rule in rules.items()}
    print(f"{'mean recall (%)':<36}{'val':>8}{'test':>8}")
    for name, row in table.items():
        print(f"{name:<36}{row['val']:>8.2f}{row['test']:>8.2f}")
    family = [f"{w:g} * ITM log-odds + ITC logit" for w in WEIGHTS]
    best = max(family, key=lambda name: table[name]["val"])
    print(f"chosen on val: {best}: val {table[best]['val']:.2f}, test {table[best]['test']:.2f} "
          f"(dual {table['dual encoder']['test']:.2f})")
    print("\npositives above negatives among the top k (pairwise AUC, 0.5 = chance)")
    for label, s in scores.items():
        for direction, rk, pos, m, o in zip(("TR", "IR"), s["rankings"], s["positive"], s["match"], s["other"]):
            cos, n = pairwise_auc(rk.top_scores, pos)
            print(f"{label} {direction} ({n} queries): cosine {cos:.3f}, ITM logit {pairwise_auc(m, pos)[0]:.3f}, "
                  f"ITM log-odds {pairwise_auc(m - o, pos)[0]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
