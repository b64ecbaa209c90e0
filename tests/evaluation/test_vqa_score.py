"""``eval.py vqa-score`` on files in the official VQA v2 layout, and its checks of bad results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlmo_composer.evaluation.vqa_score import main as vqa_score

REPO = Path(__file__).resolve().parents[2]

# (question_id, image_id, question_type, answer_type, 10 annotator answers, prediction, accuracy)
QUESTIONS = [
    (262148000, 262148, "is the", "yes/no", ["yes"] * 10, "yes", 1.0),
    (262148001, 262148, "is the", "yes/no", ["yes"] * 6 + ["no"] * 4, "No", 1.0),  # disagree: "No" -> "no"
    (262148002, 262148, "how many", "number", ["2"] + ["3"] * 9, "two", 0.3),
    (393225000, 393225, "how many", "number", ["4"] * 10, "four", 0.0),  # unanimous: as written
    (393225001, 393225, "what color is the", "other", ["red"] * 2 + ["blue"] * 8, "Red.", 0.6),
    (393225002, 393225, "is the", "yes/no", ["no"] * 10, "yes", 0.0),
]


def official_files(folder: Path, questions: list = QUESTIONS, subtype: str = "val2014") -> dict[str, str]:
    """Questions and annotation files of ``questions`` (rows as ``QUESTIONS``) in the official layouts.

    Layouts: the VQA v2 download page (visualqa.org/download.html, "Input
    Questions Format", "Annotation Format") and the GT-Vision-Lab/VQA API that
    reads them (``vqaTools/vqa.py``: ``questions``, ``annotations`` with
    ``question_type`` / ``answer_type`` / ``multiple_choice_answer`` (the most
    frequent answer, first-seen on a tie) / ``answers`` of ``{answer,
    answer_confidence, answer_id}``). File names are the official ones of ``subtype``.
    """
    info = {"year": 2017, "version": "2.0", "description": "test fixture", "contributor": "", "url": "",
            "date_created": "2017-04-26 17:00:44"}
    license_ = {"name": "Creative Commons Attribution 4.0 International License", "url": ""}
    header = {"info": info, "data_type": "mscoco", "data_subtype": subtype, "license": license_}
    question_file = {**header, "task_type": "Open-Ended", "questions": [
        {"question_id": q, "image_id": image, "question": f"Question {q}?"} for q, image, *_ in questions
    ]}
    annotation_file = {**header, "annotations": [
        {"question_id": q, "image_id": image, "question_type": qtype, "answer_type": atype,
         "multiple_choice_answer": max(answers, key=answers.count),
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}
        for q, image, qtype, atype, answers, *_ in questions
    ]}
    paths = {
        "questions": folder / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
        "annotations": folder / f"v2_mscoco_{subtype}_annotations.json",
    }
    for key, content in (("questions", question_file), ("annotations", annotation_file)):
        paths[key].write_text(json.dumps(content))
    return {k: str(v) for k, v in paths.items()}


def write_results(path: Path, results: object) -> str:
    """A results file (``[{question_id, answer}]``, the download page's "Results Format")."""
    path.write_text(json.dumps(results))
    return str(path)


def write_official_files(folder: Path, results: object = None) -> dict[str, str]:
    """The val2014 questions and annotations of ``QUESTIONS``, and a results file (their predictions by default)."""
    if results is None:
        results = [{"question_id": q, "answer": pred} for q, *_, pred, _ in QUESTIONS]
    return {**official_files(folder), "results": write_results(folder / "results.json", results)}


def cli_args(paths: dict[str, str]) -> list[str]:
    return [arg for key in ("questions", "annotations", "results") for arg in (f"--{key}", paths[key])]


def test_cli_prints_and_writes_the_official_breakdown(tmp_path):
    paths = write_official_files(tmp_path)
    out = tmp_path / "scores" / "scores.json"
    run = subprocess.run(
        [sys.executable, "eval.py", "vqa-score", *cli_args(paths), "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr
    # overall 100 x 2.9 / 6; "is the": 2 / 3; "how many": 0.3 / 2; "what color is the": 0.6.
    expected = {
        "overall": 48.33,
        "perQuestionType": {"is the": 66.67, "how many": 15.0, "what color is the": 60.0},
        "perAnswerType": {"yes/no": 66.67, "number": 15.0, "other": 60.0},
        "perQuestion": {str(q): round(100 * acc, 2) for q, *_, acc in QUESTIONS},
    }
    assert json.loads(out.read_text()) == expected
    lines = run.stdout.splitlines()
    assert "Overall Accuracy is: 48.33" in lines
    assert lines.index("Per Question Type Accuracy is the following:") < lines.index("how many : 15.00")
    assert lines.index("Per Answer Type Accuracy is the following:") < lines.index("yes/no : 66.67")


def results_without(index: int) -> list[dict]:
    return [{"question_id": q, "answer": pred} for i, (q, *_, pred, _) in enumerate(QUESTIONS) if i != index]


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"262148000": "yes"}, "results is not an array of objects"),
        (results_without(2), r"1 \(first: \[262148002\]\) annotated questions have no prediction"),
        (results_without(9) + [{"question_id": 7, "answer": "yes"}],
         r"1 \(first: \[7\]\) predicted question ids are not annotated"),
        (results_without(9) + [{"question_id": 262148000, "answer": "no"}],
         r"more than one prediction for question ids 1 \(first: \[262148000\]\)"),
        (results_without(0) + [{"question_id": 262148000, "answer": 2}],
         r"results\[5\] \(question 262148000\): answer 2 is int, not a string"),
        (results_without(0) + [{"question_id": "262148000", "answer": "yes"}],
         r"results\[5\]: question_id '262148000' is not an integer"),
        (results_without(0) + [{"answer": "yes"}], r"results\[5\] is not an object with 'question_id' and 'answer'"),
    ],
    ids=["not-a-list", "missing", "extra", "duplicate", "non-string-answer", "string-id", "no-id"],
)
def test_malformed_results_exit_2_naming_the_problem(tmp_path, capsys, results, message):
    paths = write_official_files(tmp_path, results)
    assert vqa_score(cli_args(paths)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vqa-score error: {paths['results']}")
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_mismatched_or_broken_official_files_exit_2(tmp_path, capsys):
    paths = write_official_files(tmp_path)
    questions = json.loads(Path(paths["questions"]).read_text())
    questions["questions"] = questions["questions"][1:]
    Path(paths["questions"]).write_text(json.dumps(questions))
    assert vqa_score(cli_args(paths)) == 2
    assert "does not have: 1 (first: [262148000]) (are both files from the same split?)" in capsys.readouterr().err
    Path(paths["annotations"]).write_text("{")
    assert vqa_score(cli_args(paths)) == 2
    assert f"annotation file {paths['annotations']} is not valid JSON" in capsys.readouterr().err
