"""The template narrator's wording for repeated and plural object names (issue 22)."""

from __future__ import annotations

import pytest

from sifthinker.data.narrator import NarrationInput, TemplateNarrator, _plural
from sifthinker.data.trajectory import FocusStep

BOX = (0.1, 0.1, 0.2, 0.2)


def _texts(names, category="counting", depths=None):
    depths = depths if depths is not None else tuple(1.0 + i for i in range(len(names)))
    steps = [FocusStep("full", ((0, 0, 1, 1),), (2.0,)), FocusStep("merged", (BOX,), (1.5,)),
             FocusStep("gt", tuple(BOX for _ in depths), depths)]
    item = NarrationInput("<image> How many?", str(len(names)), category, list(names), steps)
    return TemplateNarrator().narrate(item)


@pytest.mark.parametrize("name,plural", [("red square", "red squares"), ("box", "boxes"), ("cherry", "cherries"),
                                         ("toy", "toys"), ("framed squares", "framed squares"),
                                         ("glass", "glasses"), ("bus", "buses")])
def test_plural(name, plural):
    assert _plural(name) == plural


def test_repeated_names_are_counted_and_plural():
    _, merged, last = _texts(["red square", "red square"])
    assert merged == "This region covers the 2 red squares together."
    assert last == "Here are the 2 red squares: I count 2; so the answer is 2."
    _, merged, last = _texts(["red square", "red square", "blue circle"])
    assert last.startswith("Here are the 2 red squares and the blue circle: I count 3;")


def test_one_object_is_singular_and_not_together():
    _, merged, last = _texts(["red square"])
    assert merged == "This region covers the red square."
    assert last == "Here is the red square: I count 1; so the answer is 1."
    _, _, last = _texts(["cup", "cup"], category="spatial", depths=(1.0, 3.0))
    assert last == "Here are the cup at depth 1 and the cup at depth 3; so the answer is 2."
