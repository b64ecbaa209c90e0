"""The curves picture from hand-written metrics files: what a person reads off it, checked on the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from matplotlib.ticker import MaxNLocator

from vlmo_composer.training.curves import ITM_PRIOR_LABEL, build_figure, load_runs, main, run_name

RECALL = "metrics/test/RetrievalRecall/"


def write_metrics(path: Path, steps: int, eval_at: tuple[int, ...], chance: bool = False, scale: float = 1.0) -> Path:
    """A metrics.jsonl as training writes it: a line per step, a line per evaluation."""
    lines = []
    for step in range(1, steps + 1):
        lines.append({"batch": step, "epoch": 0, "sample": 8 * step, "loss/train/total": 5.0 / step,
                      "loss/train/itc": 2.0 / step, "loss/train/itm": 0.64 - 0.01 * step,
                      "loss/train/mlm": 3.0 / step, "lr-AdamW/group0": 1e-4 * step, "time/batch": step - 1.0})
        if step in eval_at:
            recalls = {f"{RECALL}{d}_r{k}": min(1.0, scale * step * k / 100) for d in ("tr", "ir") for k in (1, 5, 10)}
            recalls[f"{RECALL}r_mean"] = sum(recalls.values()) / 6
            if chance:
                recalls.update({f"{RECALL}chance_tr_r1": 0.02, f"{RECALL}chance_ir_r1": 0.01})
            lines.append({"batch": step, "epoch": 0, "sample": 8 * step, **recalls})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def axis_titled(fig, text: str):
    return next(ax for ax in fig.axes if text in ax.get_title())


def labelled(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_one_run_reads_as_run_name_steps_and_percent(tmp_path):
    path = write_metrics(tmp_path / "runs" / "myrun" / "checkpoints" / "metrics.jsonl", 6, (3, 6), chance=True)
    out = tmp_path / "out" / "curves.png"
    assert main([str(path), str(out)]) == 0  # the Makefile's and README's form: METRICS.jsonl OUT.png
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = build_figure(load_runs([path]))
    assert fig._suptitle.get_text() == "myrun — 6 steps"
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert {ax.get_title() for ax in shown} >= {"total loss", "ITC loss", "ITM loss", "MLM loss", "learning rate"}
    assert not any("evaluation" in ax.get_title() for ax in shown)  # r_mean alone gets no panel
    for ax in shown:
        assert ax.get_xlabel() == "step" and ax.get_ylabel(), ax.get_title()
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_title()

    prior = labelled(axis_titled(fig, "ITM loss"), ITM_PRIOR_LABEL)
    assert prior.get_ydata()[0] == pytest.approx(-(math.log(1 / 3) / 3 + 2 / 3 * math.log(2 / 3)))
    assert prior.get_linestyle() == "--" and "ITM prior-only" in ITM_PRIOR_LABEL
    assert not any(ITM_PRIOR_LABEL == line.get_label() for line in axis_titled(fig, "MLM loss").get_lines())

    recall = axis_titled(fig, "retrieval recall")
    assert recall.get_ylabel() == "recall (%)"
    legend = [t.get_text() for t in recall.get_legend().get_texts()]
    assert legend[:6] == ["TR@1", "IR@1", "TR@5", "IR@5", "TR@10", "IR@10"]
    tr1, ir1 = labelled(recall, "TR@1"), labelled(recall, "IR@1")
    assert list(tr1.get_xdata()) == [3, 6] and list(tr1.get_ydata()) == pytest.approx([3.0, 6.0])  # 0.03 -> 3 %
    assert tr1.get_color() == ir1.get_color() and (tr1.get_linestyle(), ir1.get_linestyle()) == ("-", "--")
    assert labelled(recall, "chance TR@1").get_ydata()[0] == pytest.approx(2.0)
    assert labelled(recall, "chance IR@1").get_ydata()[0] == pytest.approx(1.0)


def test_one_evaluation_is_recall_against_k_with_the_values_written(tmp_path):
    path = write_metrics(tmp_path / "solo" / "metrics.jsonl", 4, (4,))
    fig = build_figure(load_runs([path]))
    assert fig._suptitle.get_text() == "solo — 4 steps"
    recall = axis_titled(fig, "retrieval recall")
    assert recall.get_title() == "retrieval recall at step 4 (test)"
    assert [t.get_text() for t in recall.get_xticklabels()] == ["R@1", "R@5", "R@10"]
    assert list(labelled(recall, "TR").get_ydata()) == pytest.approx([4.0, 20.0, 40.0])
    assert {t.get_text() for t in recall.texts} == {"4.0", "20.0", "40.0"}
    assert not any("chance" in line.get_label() for line in recall.get_lines())  # not logged: not drawn


def test_two_runs_overlay_names_both(tmp_path):
    a = write_metrics(tmp_path / "runs" / "alpha" / "checkpoints" / "metrics.jsonl", 6, (3, 6))
    b = write_metrics(tmp_path / "runs" / "beta" / "checkpoints" / "metrics.jsonl", 4, (2, 4), scale=2.0)
    out = tmp_path / "compare.png"
    assert main([str(a), str(b), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = build_figure(load_runs([a, b]))
    assert fig._suptitle.get_text() == "alpha (6 steps) vs beta (4 steps)"
    for ax in fig.axes:
        if ax.get_visible():
            names = [t.get_text() for t in ax.get_legend().get_texts()]
            assert any("alpha" in n for n in names) and any("beta" in n for n in names), (ax.get_title(), names)
    total = axis_titled(fig, "total loss")
    assert labelled(total, "alpha").get_color() != labelled(total, "beta").get_color()
    recall = axis_titled(fig, "retrieval recall")
    assert {line.get_label() for line in recall.get_lines()} == {"alpha TR@1", "alpha IR@1", "beta TR@1", "beta IR@1"}
    assert list(labelled(recall, "beta TR@1").get_ydata()) == pytest.approx([4.0, 8.0])


def test_command_line_says_what_is_missing(tmp_path):
    path = write_metrics(tmp_path / "r" / "metrics.jsonl", 2, ())
    assert main([str(tmp_path / "absent.jsonl"), str(tmp_path / "x.png")]) == 2
    with pytest.raises(SystemExit):
        main([str(path)])  # no PNG named


def test_run_name_follows_the_run_folder(tmp_path):
    assert run_name(tmp_path / "runs" / "quickstart" / "checkpoints" / "metrics.jsonl") == "quickstart"
    assert run_name(tmp_path / "ckpt" / "metrics.jsonl") == "ckpt"
    a = write_metrics(tmp_path / "one" / "run" / "metrics.jsonl", 1, ())
    b = write_metrics(tmp_path / "two" / "run" / "metrics.jsonl", 1, ())
    assert [r.name for r in load_runs([a, b])] == [str(a.parent), str(b.parent)]  # same name: told apart


def test_many_evaluations_are_a_line_without_markers(tmp_path):
    path = write_metrics(tmp_path / "long" / "metrics.jsonl", 25, tuple(range(1, 26)))
    recall = axis_titled(build_figure(load_runs([path])), "retrieval recall")
    assert len(labelled(recall, "IR@10").get_xdata()) == 25 and labelled(recall, "IR@10").get_marker() == "None"
