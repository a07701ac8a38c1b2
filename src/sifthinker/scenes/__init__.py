"""Seeded synthetic 3D scenes (RGB, float depth, object boxes) and questions with exact answers.

The embedded data source of the project: no download. Quick use::

    from sifthinker.scenes import generate_items
    for scene, q in generate_items(12, seed=0):
        scene.rgb, scene.depth, q.question, q.answer, q.boxes

Boxes here are in pixels of the rendered image; convert them with ``sifthinker.method.geometry``.

May import ``sifthinker.method`` and ``sifthinker.names``.
"""

from .generate import derive_seed, generate_scene
from .items import TARGETS, generate_items
from .model import (
    COLORS,
    MIN_VISIBLE_PIXELS,
    SHAPES,
    SIZES,
    Camera,
    ObjectSpec,
    Scene,
    SceneObject,
)
from .questions import (
    ANSWER_TYPES,
    CATEGORIES,
    Question,
    answer_class,
    candidate_questions,
    questions_for,
)
from .render import render_scene

__all__ = [
    "ANSWER_TYPES",
    "CATEGORIES",
    "COLORS",
    "MIN_VISIBLE_PIXELS",
    "SHAPES",
    "SIZES",
    "TARGETS",
    "Camera",
    "ObjectSpec",
    "Question",
    "Scene",
    "SceneObject",
    "answer_class",
    "candidate_questions",
    "derive_seed",
    "generate_items",
    "generate_scene",
    "questions_for",
    "render_scene",
]
