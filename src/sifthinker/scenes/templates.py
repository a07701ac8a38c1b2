"""Question templates per category, with exact answers derived from a scene's object metadata.

Every question names objects by ``"<color> <shape>"`` (unique in generated scenes), mentions only
objects with at least ``MIN_VISIBLE_PIXELS`` visible pixels, and is skipped when the relation it asks
about is too close to call (see :mod:`.relations`). ``evidence`` lists the ids of the objects a
grounded answer must look at and ``boxes`` their visible pixel boxes, in the same order; it is never
empty. Each candidate carries a ``kind`` (its template family) used for balanced sampling.

Existence questions come in two families (both yes/no, evidence never empty):
- ``existence/plain``: "Is there a <color> <shape> in the image?" ("an orange ..."). A "yes" has the
  object as evidence.
  A "no" is asked only for a combination absent from the whole scene and only when some visible object
  shares its colour or its shape; those look-alikes are the evidence (what one must inspect to see
  that none of them is the asked object).
- ``existence/anchored``: "Is there a <color> <shape> to the left of / to the right of the <ref>?"
  "yes": the object exists and lies strictly on that side (evidence: object, reference); "no": either
  the object is absent from the scene (evidence: the reference; only colour+shape combinations that
  share a colour or a shape with a visible object are asked) or it lies strictly on the other side
  (evidence: object, reference). Horizontally overlapping pairs are skipped. The absent case has its
  own kind, ``existence/anchored_absent``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import permutations

from . import relations as rel
from .model import COLORS, MIN_VISIBLE_PIXELS, SHAPE_PLURALS, SHAPES, Question, Scene, SceneObject


def _q(category, text, answer, answer_type, objs: Iterable[SceneObject], kind, options=()) -> Question:
    objs = list(objs)
    return Question(
        category,
        text,
        answer,
        answer_type,
        [o.id for o in objs],
        [o.box for o in objs],
        list(options),
        f"{category}/{kind}",
    )


def _a(phrase: str) -> str:
    """The phrase with its indefinite article: "a red cube", "an orange cube"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _eligible(o: SceneObject) -> bool:
    return o.visible_pixels >= MIN_VISIBLE_PIXELS and o.box is not None


def _unique_names(scene: Scene) -> list[SceneObject]:
    """Eligible objects whose name no other object in the scene shares."""
    counts: dict[str, int] = {}
    for o in scene.objects:
        counts[o.name] = counts.get(o.name, 0) + 1
    return [o for o in scene.objects if _eligible(o) and counts[o.name] == 1]


def _which(category, kind, text, a, b, winner) -> Question:
    """Option question naming a then b; ``winner`` is whichever of them satisfies the question."""
    text = text.format(a=a.name, b=b.name)
    return _q(category, text, winner.name, "option", [a, b], kind, [a.name, b.name])


def _both_orders(category, kind, text, a, b, winner) -> list[Question]:
    return [_which(category, kind, text, a, b, winner), _which(category, kind, text, b, a, winner)]


def depth_questions(scene: Scene) -> list[Question]:
    out = []
    for a, b in permutations(_unique_names(scene), 2):
        if rel.closer(a, b):  # a near, b far
            out += _both_orders(
                "depth", "closer", "Which is closer to the camera, the {a} or the {b}?", a, b, a
            )
            out += _both_orders(
                "depth", "farther", "Which is farther from the camera, the {a} or the {b}?", a, b, b
            )
    return out


# Per axis: kind prefix, yes/no phrase of the first / second relation, "or" phrase, relation words,
# and the "which" phrases. ``a`` is the object on the left (or above), ``b`` the other.
_AXES = {
    "lr": (
        "Is the {x} to the {w} of the {y}?",
        "Is the {x} to the left or to the right of the {y}?",
        ("left", "right"),
        (
            "Which is further to the left, the {a} or the {b}?",
            "Which is further to the right, the {a} or the {b}?",
        ),
    ),
    "ud": (
        "In the image, is the {x} {w} the {y}?",
        "In the image, is the {x} above or below the {y}?",
        ("above", "below"),
        (
            "In the image, which is higher, the {a} or the {b}?",
            "In the image, which is lower, the {a} or the {b}?",
        ),
    ),
}


def _axis_questions(axis: str, a: SceneObject, b: SceneObject) -> list[Question]:
    """All position questions about a pair where ``a`` is left of (or above) ``b``, strictly."""
    yn, either, (w1, w2), (which1, which2) = _AXES[axis]
    out = []
    for x, y, word, ans in ((a, b, w1, "yes"), (b, a, w1, "no"), (b, a, w2, "yes"), (a, b, w2, "no")):
        out.append(
            _q("position", yn.format(x=x.name, w=word, y=y.name), ans, "yes_no", [x, y], f"{axis}_yesno")
        )
    for x, y, ans in ((a, b, w1), (b, a, w2)):
        out.append(
            _q(
                "position",
                either.format(x=x.name, y=y.name),
                ans,
                "option",
                [x, y],
                f"{axis}_relation",
                [w1, w2],
            )
        )
    out += _both_orders("position", f"{axis}_which", which1, a, b, a)
    out += _both_orders("position", f"{axis}_which", which2, a, b, b)
    return out


def position_questions(scene: Scene) -> list[Question]:
    out = []
    for a, b in permutations(_unique_names(scene), 2):
        if rel.left_of(scene, a, b):
            out += _axis_questions("lr", a, b)
        if rel.above(scene, a, b):
            out += _axis_questions("ud", a, b)
    return out


def counting_questions(scene: Scene) -> list[Question]:
    out = []
    groups = [("color", f"How many {c} objects are there?", lambda o, c=c: o.color == c) for c in COLORS]
    groups += [
        ("shape", f"How many {SHAPE_PLURALS[s]} are there?", lambda o, s=s: o.shape == s) for s in SHAPES
    ]
    for kind, text, pred in groups:
        objs = [o for o in scene.objects if pred(o)]
        if objs and all(_eligible(o) for o in objs):  # every counted object is clearly visible
            out.append(_q("counting", text, str(len(objs)), "number", objs, kind))
    return out


def existence_questions(scene: Scene) -> list[Question]:
    out = []
    present = {(o.color, o.shape) for o in scene.objects}
    visible = [o for o in scene.objects if _eligible(o)]
    refs = _unique_names(scene)
    for o in refs:
        out.append(_q("existence", f"Is there {_a(o.name)} in the image?", "yes", "yes_no", [o], "plain"))
    # absent combinations that share a colour or a shape with something visible (plausible distractors)
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    lookalikes_of = {cs: [o for o in visible if o.color == cs[0] or o.shape == cs[1]] for cs in absent}
    absent = [cs for cs in absent if lookalikes_of[cs]]
    for c, s in absent:
        lookalikes = lookalikes_of[(c, s)]
        if lookalikes:
            out.append(
                _q(
                    "existence",
                    f"Is there {_a(f'{c} {s}')} in the image?",
                    "no",
                    "yes_no",
                    lookalikes,
                    "plain",
                )
            )
    for ref in refs:
        for side in ("left", "right"):
            text = "Is there {} to the " + side + " of the " + ref.name + "?"
            for t in refs:
                if t is ref:
                    continue
                on_side = rel.left_of(scene, t, ref) if side == "left" else rel.left_of(scene, ref, t)
                other = rel.left_of(scene, ref, t) if side == "left" else rel.left_of(scene, t, ref)
                if on_side or other:
                    out.append(
                        _q(
                            "existence",
                            text.format(_a(t.name)),
                            "yes" if on_side else "no",
                            "yes_no",
                            [t, ref],
                            "anchored",
                        )
                    )
            for c, s in absent:
                out.append(
                    _q("existence", text.format(_a(f"{c} {s}")), "no", "yes_no", [ref], "anchored_absent")
                )
    return out


def size_questions(scene: Scene) -> list[Question]:
    out = []
    for a, b in permutations(_unique_names(scene), 2):
        if rel.larger(a, b):
            out += _both_orders("size", "larger", "Which is larger, the {a} or the {b}?", a, b, a)
            out += _both_orders("size", "smaller", "Which is smaller, the {a} or the {b}?", a, b, b)
    return out


def attribute_questions(scene: Scene) -> list[Question]:
    out = []
    for s in SHAPES:
        objs = [o for o in scene.objects if o.shape == s]
        if len(objs) == 1 and _eligible(objs[0]):
            out.append(_q("attribute", f"What color is the {s}?", objs[0].color, "color", objs, "color"))
    for c in COLORS:
        objs = [o for o in scene.objects if o.color == c]
        if len(objs) == 1 and _eligible(objs[0]):
            out.append(
                _q("attribute", f"What shape is the {c} object?", objs[0].shape, "name", objs, "shape")
            )
    return out


GENERATORS: dict[str, Callable[[Scene], list[Question]]] = {
    "depth": depth_questions,
    "position": position_questions,
    "counting": counting_questions,
    "existence": existence_questions,
    "size": size_questions,
    "attribute": attribute_questions,
}
