"""Score a VQA v2 results file against the official files, as the official evaluator does.

    python eval.py vqa-score --questions v2_OpenEnded_mscoco_val2014_questions.json \\
        --annotations v2_mscoco_val2014_annotations.json --results results.json \\
        [--output scores.json]

Prints the overall accuracy, then per question type and per answer type
(``yes/no``, ``number``, ``other``), in percent with 2 decimals, as
GT-Vision-Lab/VQA's ``vqaEvalDemo.py`` does; ``--output`` writes them as the
official accuracy JSON (``overall``, ``perQuestionType``, ``perAnswerType``)
plus ``perQuestion`` (the script's ``evalQA``). The accuracy itself is
:func:`vlmo_composer.metrics.vqa_report`.

The results file is checked as the official ``VQA.loadRes`` checks it: a JSON
list of ``{"question_id": int, "answer": str}``, whose question ids are
exactly those of the annotation file, and, for a Multiple Choice questions
file, answers among each question's ``multiple_choices``. Where the official
code would silently keep the last of two predictions for one question, or
crash on a non-string answer, this command refuses with the record's index;
it also refuses annotations of questions the questions file does not have
(files of two different splits). Every problem is reported in one line and
the command exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmo_composer.metrics import AnnotatedQuestion, vqa_report

MULTIPLE_CHOICE = "Multiple Choice"  # the official task_type of v1 multiple-choice files


class ResultsError(ValueError):
    """A questions, annotation or results file the official evaluator would not accept."""


def _load_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{what} file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{what} file {path} is not valid JSON: {err}") from None


def _list_under(data: Any, key: str, path: str, what: str) -> list:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ResultsError(f"{path} has no '{key}' list: is it the VQA {what} file?")
    return items


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids_preview(ids: Sequence[int]) -> str:
    shown = sorted(ids)[:5]
    return f"{len(ids)} (first: {shown})"


def load_annotations(path: str) -> list[AnnotatedQuestion]:
    """The annotated questions of an official annotation file, in file order."""
    annotations = _list_under(_load_json(path, "annotation"), "annotations", path, "annotation")
    questions = []
    for i, ann in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise ResultsError(f"{where} is not an object")
        missing = [k for k in ("question_id", "question_type", "answer_type", "answers") if k not in ann]
        if missing:
            raise ResultsError(f"{where} has no {missing}")
        if not _is_id(ann["question_id"]):
            raise ResultsError(f"{where}: question_id {ann['question_id']!r:.40} is not an integer")
        answers = ann["answers"]
        if not isinstance(answers, list) or not answers or not all(
            isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers
        ):
            raise ResultsError(f"{where} (question {ann['question_id']}): 'answers' must be a non-empty "
                               "list of {\"answer\": str, ...}")
        questions.append(AnnotatedQuestion(
            ann["question_id"], tuple(a["answer"] for a in answers), str(ann["question_type"]),
            str(ann["answer_type"]),
        ))
    repeated = [q for q, n in Counter(q.question_id for q in questions).items() if n > 1]
    if repeated:
        raise ResultsError(f"{path}: question ids annotated twice: {_ids_preview(repeated)}")
    return questions


def load_questions(path: str) -> tuple[str, dict[Any, dict]]:
    """``task_type`` and question_id -> question of an official questions file."""
    data = _load_json(path, "questions")
    questions = _list_under(data, "questions", path, "questions")
    by_id = {q.get("question_id"): q for q in questions if isinstance(q, dict)}
    return str(data.get("task_type", "")), by_id


def load_results(path: str, annotated: Sequence[AnnotatedQuestion], task_type: str,
                 questions: dict[Any, dict]) -> dict[Any, str]:
    """question_id -> predicted answer, after the official ``loadRes`` checks (and stricter ones)."""
    results = _load_json(path, "results")
    if not isinstance(results, list):
        raise ResultsError(f"{path}: results is not an array of objects (got {type(results).__name__})")
    predictions: dict[Any, str] = {}
    repeated = []
    for i, entry in enumerate(results):
        where = f"{path}: results[{i}]"
        if not isinstance(entry, dict) or "question_id" not in entry or "answer" not in entry:
            raise ResultsError(f"{where} is not an object with 'question_id' and 'answer': {entry!r:.80}")
        question_id, answer = entry["question_id"], entry["answer"]
        if not _is_id(question_id):
            raise ResultsError(f"{where}: question_id {question_id!r:.40} is not an integer")
        if not isinstance(answer, str):
            raise ResultsError(f"{where} (question {question_id}): answer {answer!r:.40} is "
                               f"{type(answer).__name__}, not a string")
        if task_type == MULTIPLE_CHOICE and answer not in questions.get(question_id, {}).get("multiple_choices", ()):
            raise ResultsError(f"{where} (question {question_id}): predicted answer is not one of the multiple choices")
        if question_id in predictions:
            repeated.append(question_id)
        predictions[question_id] = answer
    if repeated:
        raise ResultsError(f"{path}: more than one prediction for question ids {_ids_preview(repeated)}")
    expected = {q.question_id for q in annotated}
    missing, extra = expected - predictions.keys(), predictions.keys() - expected
    if missing or extra:
        raise ResultsError(
            f"{path}: results do not correspond to the annotation set: "
            f"{_ids_preview(list(missing))} annotated questions have no prediction, "
            f"{_ids_preview(list(extra))} predicted question ids are not annotated"
        )
    return predictions


def score_files(questions_path: str, annotations_path: str, results_path: str) -> dict[str, Any]:
    """The official report of a results file (see :func:`vlmo_composer.metrics.vqa_report`)."""
    task_type, questions = load_questions(questions_path)
    annotated = load_annotations(annotations_path)
    unknown = [q.question_id for q in annotated if q.question_id not in questions]
    if unknown:
        raise ResultsError(f"{annotations_path} annotates questions that {questions_path} does not have: "
                           f"{_ids_preview(unknown)} (are both files from the same split?)")
    return vqa_report(annotated, load_results(results_path, annotated, task_type, questions))


def format_report(report: dict[str, Any]) -> str:
    """The report printed as the official ``vqaEvalDemo.py`` prints it."""
    lines = [f"Overall Accuracy is: {report['overall']:.02f}", "", "Per Question Type Accuracy is the following:"]
    lines += [f"{name} : {value:.02f}" for name, value in report["perQuestionType"].items()]
    lines += ["", "Per Answer Type Accuracy is the following:"]
    lines += [f"{name} : {value:.02f}" for name, value in report["perAnswerType"].items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval.py vqa-score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", required=True, help="official questions JSON of the split")
    parser.add_argument("--annotations", required=True, help="official annotation JSON of the split")
    parser.add_argument("--results", required=True, help="[{question_id, answer}] JSON to score")
    parser.add_argument("--output", help="write the scores as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = score_files(args.questions, args.annotations, args.results)
    except ResultsError as err:
        print(f"vqa-score error: {err}", file=sys.stderr)
        return 2
    print(f"{len(report['perQuestion'])} questions scored")
    print(format_report(report))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
