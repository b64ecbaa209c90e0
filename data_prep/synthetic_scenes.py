"""Procedural scenes for the embedded synthetic dataset: drawing, captions, questions, statements.

A scene is a background colour and one to three shapes, each with a shape,
colour and size, in distinct coarse positions (left / middle / right). All
text is generated from the scene with fixed templates, so two scenes'
captions differ only in attribute words: a model has to look at the image to
tell them apart. The attribute space is small (4 shapes, 5 colours, 2 sizes,
3 positions, 3 backgrounds) so a tiny model learns it on CPU in minutes.

Everything is a pure function of a ``random.Random`` seeded from strings, so
the same seed gives the same scenes, text and image bytes.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS = {
    "red": (215, 45, 45),
    "green": (45, 165, 70),
    "blue": (45, 85, 215),
    "yellow": (235, 205, 45),
    "purple": (145, 65, 175),
}
BACKGROUNDS = {"white": (240, 240, 240), "gray": (125, 125, 125), "black": (25, 25, 25)}
SIZES = {"small": 0.09, "large": 0.15}  # radius as a fraction of the image side
POSITIONS = ("left", "middle", "right")
POSITION_X = {"left": 1 / 6, "middle": 0.5, "right": 5 / 6}
POSITION_PHRASE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
OBJECT_COUNT_WEIGHTS = (1, 2, 2)  # one, two or three shapes
SUPERSAMPLE = 4  # draw large, then downscale: anti-aliased edges


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    position: str

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]  # ordered left to right

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum(1 for s in self.shapes
                   if (shape is None or s.shape == shape) and (color is None or s.color == color))

    def at(self, position: str) -> Shape | None:
        return next((s for s in self.shapes if s.position == position), None)


def random_scene(rng: random.Random) -> Scene:
    n = rng.choices((1, 2, 3), weights=OBJECT_COUNT_WEIGHTS)[0]
    positions = sorted(rng.sample(POSITIONS, n), key=POSITIONS.index)
    shapes = tuple(Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(list(SIZES)), p)
                   for p in positions)
    return Scene(rng.choice(list(BACKGROUNDS)), shapes)


# ---------------------------------------------------------------- drawing


def render_scene(scene: Scene, size: int, seed: str) -> bytes:
    """PNG bytes of the scene (lossless, so the bytes depend only on the seed)."""
    rng = random.Random(seed)
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), _jitter(BACKGROUNDS[scene.background], rng, 8))
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        cx = (POSITION_X[s.position] + rng.uniform(-0.02, 0.02)) * big
        cy = (0.5 + rng.uniform(-0.12, 0.12)) * big
        r = SIZES[s.size] * rng.uniform(0.9, 1.1) * big
        _DRAW[s.shape](draw, cx, cy, r, _jitter(COLORS[s.color], rng, 12))
    image = image.reduce(SUPERSAMPLE)  # box filter: exact area average of the big drawing
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _square(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    h = r * 0.85
    draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)


def _triangle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=fill)


def _cross(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    w = r * 0.35
    draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)


_DRAW: dict[str, Callable[..., None]] = {
    "circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross,
}


# ---------------------------------------------------------------- captions


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int, noun: str = "shape") -> str:
    return f"{NUMBER_WORDS[n]} {noun if n == 1 else noun + 's'}"


def captions(scene: Scene) -> list[str]:
    """Five paraphrases from fixed templates, each naming every attribute of the scene.

    So every caption identifies its image within a split of unique scenes,
    and retrieval has exactly one right answer.
    """
    placed = _join([f"{s.phrase()} {POSITION_PHRASE[s.position]}" for s in scene.shapes])
    bg = scene.background
    reverse = _join([f"{POSITION_PHRASE[s.position]} {s.phrase()}" for s in reversed(scene.shapes)])
    return [
        f"{placed}, on a {bg} background",
        f"{_count_phrase(len(scene.shapes))} on a {bg} background: {placed}",
        f"a {bg} picture with {placed}",
        f"{reverse}, on a {bg} background",
        f"the image shows {placed} over a {bg} background",
    ]


def paragraph(scenes: list[Scene]) -> str:
    """A short text-only paragraph describing a few scenes (for the language stage)."""
    sentences = [c[0].upper() + c[1:] + "." for c in (captions(s)[i % 5] for i, s in enumerate(scenes))]
    return " ".join(sentences)


# ---------------------------------------------------------------- VQA


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    candidates: tuple[str, ...]  # plausible answers of this question type (for annotator noise)


def _qa_count(scene: Scene, rng: random.Random) -> QA:
    return QA("how many shapes are there?", str(len(scene.shapes)), ("1", "2", "3"))


def _qa_color_at(scene: Scene, rng: random.Random) -> QA:
    s = rng.choice(scene.shapes)
    return QA(f"what color is the shape {POSITION_PHRASE[s.position]}?", s.color, tuple(COLORS))


def _qa_shape_at(scene: Scene, rng: random.Random) -> QA:
    s = rng.choice(scene.shapes)
    return QA(f"what shape is {POSITION_PHRASE[s.position]}?", s.shape, SHAPES)


def _qa_size_at(scene: Scene, rng: random.Random) -> QA:
    s = rng.choice(scene.shapes)
    return QA(f"is the shape {POSITION_PHRASE[s.position]} small or large?", s.size, tuple(SIZES))


def _qa_exists(scene: Scene, rng: random.Random) -> QA:
    if rng.random() < 0.5:
        s = rng.choice(scene.shapes)
        shape, color = s.shape, s.color
    else:
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    answer = "yes" if scene.count(shape, color) else "no"
    return QA(f"is there a {color} {shape}?", answer, ("yes", "no"))


def _qa_background(scene: Scene, rng: random.Random) -> QA:
    return QA("what color is the background?", scene.background, tuple(BACKGROUNDS))


def _qa_count_color(scene: Scene, rng: random.Random) -> QA:
    color = rng.choice(scene.shapes).color if rng.random() < 0.7 else rng.choice(list(COLORS))
    return QA(f"how many {color} shapes are there?", str(scene.count(color=color)), ("0", "1", "2", "3"))


QUESTION_TYPES: tuple[Callable[[Scene, random.Random], QA], ...] = (
    _qa_count, _qa_color_at, _qa_shape_at, _qa_size_at, _qa_exists, _qa_background, _qa_count_color,
)


def questions(scene: Scene, rng: random.Random, per_image: int) -> list[QA]:
    return [make(scene, rng) for make in rng.sample(QUESTION_TYPES, per_image)]


def annotator_answers(qa: QA, rng: random.Random, num: int = 10, noise: float = 0.1) -> list[str]:
    """``num`` annotators: mostly the true answer, sometimes another plausible one."""
    wrong = [c for c in qa.candidates if c != qa.answer]
    return [rng.choice(wrong) if wrong and rng.random() < noise else qa.answer for _ in range(num)]


# ---------------------------------------------------------------- NLVR2


@dataclass(frozen=True)
class Statement:
    sentence: str
    holds: Callable[[Scene, Scene], bool]


def random_statement(rng: random.Random) -> Statement:
    """A statement about an image pair; its parameters never depend on the label."""
    kind = rng.randrange(6)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    if kind == 0:
        return Statement("the left image contains more shapes than the right image",
                         lambda a, b: len(a.shapes) > len(b.shapes))
    if kind == 1:
        return Statement(f"both images contain a {color} shape",
                         lambda a, b: a.count(color=color) > 0 and b.count(color=color) > 0)
    if kind == 2:
        return Statement(f"both images contain a {shape}",
                         lambda a, b: a.count(shape) > 0 and b.count(shape) > 0)
    if kind == 3:
        n = rng.randint(1, 3)
        return Statement(f"there are exactly {_count_phrase(n, shape)} in the two images",
                         lambda a, b: a.count(shape) + b.count(shape) == n)
    if kind == 4:
        return Statement("the two images have the same background color",
                         lambda a, b: a.background == b.background)
    return Statement(f"exactly one image contains a {color} {shape}",
                     lambda a, b: (a.count(shape, color) > 0) != (b.count(shape, color) > 0))


def nlvr2_example(rng: random.Random, label: bool, max_tries: int = 2000) -> tuple[Scene, Scene, str]:
    """Two scenes and a statement whose truth is ``label``.

    The statement is drawn first and only the scenes are redrawn until the
    truth matches, so the sentence alone says nothing about the label.
    """
    while True:
        statement = random_statement(rng)
        for _ in range(max_tries):
            a, b = random_scene(rng), random_scene(rng)
            if statement.holds(a, b) == label:
                return a, b, statement.sentence
