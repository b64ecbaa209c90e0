"""VQA v2 answer normalisation, answer vocabulary and soft scores.

One home for the rules that decide what a VQA answer *is*: ``data_prep``
builds the answer vocabulary and the per-question targets with them and the
VQA metric normalises predictions with them, so the two can never disagree.

The behaviour follows the official VQA v2 evaluation normalisation as the
official VLMo code applies it (``vlmo/utils/glossary.py`` and
``vlmo/utils/write_vqa.py``):

* the vocabulary is the normalised ``multiple_choice_answer`` of every train
  and val question, kept when it occurs at least 9 times (3129 labels on the
  full data), numbered in order of first occurrence (train file first);
* a question's targets count the *raw* annotator answers (not normalised, as
  the official code does) that are in the vocabulary, scored
  0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / >= 4 matching annotators.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

# The official table: missing apostrophes restored (keys are what annotators typed).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!")  # fmt: skip
# The official pattern, kept verbatim ("(?!<=" is a typo there for "(?<!"): a
# period not followed by a digit is removed, whatever precedes it. The official
# call passes ``re.UNICODE`` (32) where ``sub`` expects ``count``: at most 32
# periods go, which is kept too.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(\,)(\d)")

MIN_ANSWER_COUNT = 9
"""An answer enters the vocabulary with at least this many train+val occurrences."""


def process_punctuation(text: str) -> str:
    """The official VQA v2 evaluation's punctuation step (no case or word changes)."""
    out = text
    keep_joined = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in _PUNCTUATION:
        if keep_joined or (p + " " in text or " " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=re.UNICODE)


def process_digit_article(text: str) -> str:
    """The official evaluation's word step: lower case, number words to digits,
    articles dropped, missing apostrophes restored."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    """Normalise an answer as VLMo does when building labels: the official evaluation's
    punctuation and word steps, then commas removed."""
    return process_digit_article(process_punctuation(answer)).replace(",", "")


def soft_score(num_matching: int) -> float:
    """VQA soft accuracy of an answer given by ``num_matching`` annotators (of 10)."""
    if num_matching <= 0:
        return 0.0
    return (0.3, 0.6, 0.9)[num_matching - 1] if num_matching < 4 else 1.0


def build_answer_vocab(
    multiple_choice_answers: Iterable[str], min_count: int = MIN_ANSWER_COUNT
) -> list[str]:
    """Answers (label order) whose normalised form occurs at least ``min_count`` times.

    Labels are numbered in order of first occurrence, as the official code
    does, so label ids match official VQA checkpoints' classifier rows.
    """
    counts = Counter(normalize_answer(a) for a in multiple_choice_answers)
    return [answer for answer, n in counts.items() if n >= min_count]


def answer_targets(
    raw_answers: Sequence[str], answer_to_label: Mapping[str, int]
) -> tuple[list[int], list[float]]:
    """Labels and soft scores of one question from its annotators' raw answers.

    Answers are counted as written (the official code does not normalise them
    here); answers outside the vocabulary get no label. Labels come in order of
    first occurrence among the annotators' answers.
    """
    labels: list[int] = []
    scores: list[float] = []
    for answer, n in Counter(raw_answers).items():
        if answer in answer_to_label:
            labels.append(answer_to_label[answer])
            scores.append(soft_score(n))
    return labels, scores


def answer_vocab_to_json(answers: Sequence[str], min_count: int = MIN_ANSWER_COUNT) -> str:
    """The ``answer_vocab.json`` text: label order plus how it was built."""
    return json.dumps(
        {"answers": list(answers), "num_labels": len(answers), "min_count": min_count},
        indent=1,
        ensure_ascii=False,
    )


def answer_vocab_from_json(text: str) -> list[str]:
    """Answers in label order from the text of an ``answer_vocab.json``."""
    obj = json.loads(text)
    answers = obj.get("answers") if isinstance(obj, dict) else None
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError("answer vocabulary json must be an object with an 'answers' list of str")
    if len(set(answers)) != len(answers):
        raise ValueError("answer vocabulary json has duplicate answers")
    return answers
