"""Tests of sifthinker.scenes: rendering, metadata, occlusion, questions (answers re-derived here)."""

from __future__ import annotations

import collections
import dataclasses
import math
import re

import numpy as np
import pytest

from sifthinker.scenes import (
    ANSWER_TYPES,
    CATEGORIES,
    COLORS,
    MIN_VISIBLE_PIXELS,
    SHAPES,
    Camera,
    ObjectSpec,
    answer_class,
    candidate_questions,
    generate_items,
    generate_scene,
    questions_for,
    render_scene,
)

N_ITEMS = 240


@pytest.fixture(scope="module")
def items():
    return list(generate_items(N_ITEMS, seed=11))


# ---------------------------------------------------------------- rendering


def test_generate_scene_is_deterministic():
    a, b = generate_scene(1234), generate_scene(1234)
    assert a.rgb.tobytes() == b.rgb.tobytes()
    assert a.depth.tobytes() == b.depth.tobytes()
    assert a.metric_depth.tobytes() == b.metric_depth.tobytes()
    assert a.objects == b.objects
    c = generate_scene(1235)
    assert c.rgb.tobytes() != a.rgb.tobytes()


@pytest.mark.parametrize("size", [(320, 240), (160, 120), (200, 200)])
def test_arrays_dtypes_shapes_ranges(size):
    w, h = size
    for seed in range(3):
        s = generate_scene(seed, w, h)
        assert (s.width, s.height, s.seed) == (w, h, seed)
        assert s.rgb.dtype == np.uint8 and s.rgb.shape == (h, w, 3)
        assert s.depth.dtype == np.float32 and s.depth.shape == (h, w)
        assert s.metric_depth.dtype == np.float32 and s.metric_depth.shape == (h, w)
        assert np.isfinite(s.depth).all() and np.isfinite(s.metric_depth).all()
        assert s.depth.min() == 0.0 and s.depth.max() == 1.0
        assert (s.metric_depth > 0).all()
        m = s.metric_depth.astype(np.float64)
        np.testing.assert_allclose(s.depth, (m - m.min()) / (m.max() - m.min()), atol=1e-6)
        assert s.ids.shape == (h, w) and s.ids.min() >= -1
        assert s.rgb.std() > 10  # not a blank image


def _check_object_metadata(s):
    names = [o.name for o in s.objects]
    assert len(names) == len(set(names)), "names identify objects"
    for o in s.objects:
        assert o.shape in SHAPES and o.color in COLORS and o.size in ("small", "large")
        assert o.name == f"{o.color} {o.shape}"
        mask = s.ids == o.id
        assert o.visible_pixels == int(mask.sum())
        if o.visible_pixels == 0:
            assert o.box is None
            continue
        rows, cols = np.nonzero(mask)
        assert o.box == (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        x1, y1, x2, y2 = o.box
        assert 0 <= x1 < x2 <= s.width and 0 <= y1 < y2 <= s.height
        assert math.isclose(o.mean_depth, float(s.depth[mask].astype(np.float64).mean()), abs_tol=1e-6)
        assert o.visible_fraction == o.visible_pixels / o.projected_pixels  # of what it would cover alone
        assert o.visible_pixels <= o.projected_pixels


def test_generated_objects_metadata_and_placement():
    counts = []
    for seed in range(25):
        s = generate_scene(seed)
        _check_object_metadata(s)
        counts.append(len(s.objects))
        for o in s.objects:
            assert o.visible_pixels >= MIN_VISIBLE_PIXELS
        specs = [o.spec() for o in s.objects]
        for i, a in enumerate(specs):  # footprints never overlap: no interpenetration
            for b in specs[i + 1 :]:
                assert math.hypot(a.x - b.x, a.z - b.z) >= a.footprint_radius + b.footprint_radius
    assert min(counts) >= 2 and max(counts) >= 6
    assert len(generate_scene(5, num_objects=3).objects) <= 3


def test_every_shape_and_colour_renders_recognisably():
    for shape in SHAPES:
        s = render_scene([ObjectSpec(shape, "red", "large", 0.0, 5.0, 0.3)], Camera(), 160, 120)
        o = s.objects[0]
        assert o.visible_pixels > 200 and o.visible_fraction == 1.0
        px = s.rgb[s.ids == 0].astype(float)
        assert px[:, 0].mean() > 2 * px[:, 1].mean()  # red
        assert px[:, 0].std() > 2  # shaded, not flat
    dominant = {"red": 0, "green": 1, "blue": 2}
    for color, ch in dominant.items():
        s = render_scene([ObjectSpec("sphere", color, "large", 0.0, 5.0)], Camera(), 160, 120)
        assert s.rgb[s.ids == 0].astype(float).mean(axis=0).argmax() == ch


def test_occlusion_near_object_hides_far_one():
    cam = Camera(height=2.5, pitch=math.radians(22))
    far = ObjectSpec("cube", "blue", "small", 0.0, 8.0, 0.0)
    near = ObjectSpec("cylinder", "red", "large", -0.6, 6.0)  # in front of the cube's left part
    w, h = 320, 240
    alone_far = render_scene([far], cam, w, h)
    alone_near = render_scene([near], cam, w, h)
    both = render_scene([far, near], cam, w, h)
    _check_object_metadata(both)
    hit_far, hit_near = alone_far.ids == 0, alone_near.ids == 0
    overlap = hit_far & hit_near
    assert overlap.sum() > 200
    assert (both.ids[overlap] == 1).all()  # the near sphere wins where both project
    assert (both.ids[hit_far & ~hit_near] == 0).all()
    assert (both.metric_depth[overlap] == alone_near.metric_depth[overlap]).all()
    assert (alone_far.metric_depth[overlap] > both.metric_depth[overlap]).all()
    fo, no = both.objects
    assert fo.visible_pixels == int((hit_far & ~hit_near).sum())
    assert fo.visible_fraction < 0.95 and no.visible_fraction == 1.0
    assert fo.box[0] > alone_far.objects[0].box[0]  # the far object's visible box lost its left part
    assert fo.box[2] == alone_far.objects[0].box[2]
    assert no.mean_depth < fo.mean_depth
    assert fo.projected_pixels == alone_far.objects[0].projected_pixels


def test_fully_hidden_object_has_no_box_and_no_questions():
    cam = Camera()
    hidden = ObjectSpec("sphere", "green", "small", 0.0, 6.0)  # right behind the large cube
    wall = ObjectSpec("cube", "gray", "large", 0.0, 4.0)
    s = render_scene([hidden, wall], cam, 160, 120)
    assert s.objects[0].visible_pixels == 0 and s.objects[0].box is None
    for q in questions_for(s, np.random.default_rng(0), per_category=None):
        assert 0 not in q.evidence and "green sphere" not in q.question
        assert "How many green" not in q.question and "How many spheres" not in q.question


# ---------------------------------------------------------------- questions

NAME = r"(\w+ \w+)"
_RULES = [  # (regex, kind of derivation), tried in order
    (rf"^Which is (closer to|farther from) the camera, the {NAME} or the {NAME}\?$", "depth"),
    (rf"^Is the {NAME} to the left or to the right of the {NAME}\?$", "lr_rel"),
    (rf"^Is the {NAME} to the (left|right) of the {NAME}\?$", "lr_yn"),
    (rf"^In the image, is the {NAME} above or below the {NAME}\?$", "ud_rel"),
    (rf"^In the image, is the {NAME} (above|below) the {NAME}\?$", "ud_yn"),
    (rf"^Which is further to the (left|right), the {NAME} or the {NAME}\?$", "lr_which"),
    (rf"^In the image, which is (higher|lower), the {NAME} or the {NAME}\?$", "ud_which"),
    (r"^How many (\w+) objects are there\?$", "count_color"),
    (r"^How many (\w+)s are there\?$", "count_shape"),
    (rf"^Is there an? {NAME} in the image\?$", "exists"),
    (rf"^Is there an? {NAME} to the (left|right) of the {NAME}\?$", "exists_side"),
    (rf"^Which is (larger|smaller), the {NAME} or the {NAME}\?$", "size"),
    (r"^What color is the (\w+)\?$", "what_color"),
    (r"^What shape is the (\w+) object\?$", "what_shape"),
]


def _derive(scene, q):
    """Independently derive (answer, evidence ids) from the question text and object metadata."""
    by_name = {o.name: o for o in scene.objects}

    def strictly_left(a, b):  # whole box of a left of whole box of b
        return a.box[2] < b.box[0]

    def strictly_above(a, b):
        return a.box[3] < b.box[1]

    for pattern, kind in _RULES:
        m = re.match(pattern, q.question)
        if not m:
            continue
        g = m.groups()
        if kind == "depth":
            a, b = by_name[g[1]], by_name[g[2]]
            assert abs(a.mean_depth - b.mean_depth) >= 0.05  # never a close call
            near, far = (a, b) if a.mean_depth < b.mean_depth else (b, a)
            assert near.camera_z < far.camera_z
            return (near if g[0] == "closer to" else far).name, [a.id, b.id]
        if kind in ("lr_rel", "ud_rel"):
            a, b = by_name[g[0]], by_name[g[1]]
            f = strictly_left if kind == "lr_rel" else strictly_above
            words = ("left", "right") if kind == "lr_rel" else ("above", "below")
            assert f(a, b) or f(b, a)
            return (words[0] if f(a, b) else words[1]), [a.id, b.id]
        if kind in ("lr_yn", "ud_yn"):
            a, word, b = by_name[g[0]], g[1], by_name[g[2]]
            f = strictly_left if kind == "lr_yn" else strictly_above
            assert f(a, b) or f(b, a)
            yes = f(a, b) if word in ("left", "above") else f(b, a)
            return ("yes" if yes else "no"), [a.id, b.id]
        if kind in ("lr_which", "ud_which"):
            a, b = by_name[g[1]], by_name[g[2]]
            f = strictly_left if kind == "lr_which" else strictly_above
            assert f(a, b) or f(b, a)
            first_wins = f(a, b) if g[0] in ("left", "higher") else f(b, a)
            return (a if first_wins else b).name, [a.id, b.id]
        if kind in ("count_color", "count_shape"):
            attr = "color" if kind == "count_color" else "shape"
            objs = [o for o in scene.objects if getattr(o, attr) == g[0]]
            assert objs and all(o.visible_pixels >= MIN_VISIBLE_PIXELS for o in objs)
            return str(len(objs)), [o.id for o in objs]
        if kind == "exists":
            o = by_name.get(g[0])
            if o is not None:
                return "yes", [o.id]
            c, s = g[0].split()
            return "no", [
                o.id
                for o in scene.objects
                if (o.color == c or o.shape == s) and o.visible_pixels >= MIN_VISIBLE_PIXELS
            ]
        if kind == "exists_side":
            t, side, ref = by_name.get(g[0]), g[1], by_name[g[2]]
            if t is None:
                return "no", [ref.id]
            assert strictly_left(t, ref) or strictly_left(ref, t)
            yes = strictly_left(t, ref) if side == "left" else strictly_left(ref, t)
            return ("yes" if yes else "no"), [t.id, ref.id]
        if kind == "size":
            a, b = by_name[g[1]], by_name[g[2]]
            assert {a.size, b.size} == {"small", "large"}
            big, small = (a, b) if a.size == "large" else (b, a)
            assert big.projected_pixels > small.projected_pixels  # apparent size agrees
            return (big if g[0] == "larger" else small).name, [a.id, b.id]
        if kind == "what_color":
            objs = [o for o in scene.objects if o.shape == g[0]]
            assert len(objs) == 1
            return objs[0].color, [objs[0].id]
        if kind == "what_shape":
            objs = [o for o in scene.objects if o.color == g[0]]
            assert len(objs) == 1
            return objs[0].shape, [objs[0].id]
    raise AssertionError(f"unrecognised question: {q.question}")


def _check_question(scene, q):
    assert q.category in CATEGORIES and q.answer_type in ANSWER_TYPES
    assert " a orange" not in q.question and " a a" not in q.question
    answer, evidence = _derive(scene, q)
    assert q.answer == answer, q
    assert sorted(q.evidence) == sorted(evidence), q
    assert q.evidence and len(q.boxes) == len(q.evidence)
    for oid, box in zip(q.evidence, q.boxes, strict=True):
        o = scene.object(oid)
        assert box == o.box and o.visible_pixels >= MIN_VISIBLE_PIXELS
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
    if q.options:
        assert q.answer in q.options and len(set(q.options)) == len(q.options)
    if q.answer_type == "yes_no":
        assert q.answer in ("yes", "no")
    if q.answer_type == "number":
        assert q.answer.isdigit() and int(q.answer) >= 1


def test_item_answers_follow_from_the_scene(items):
    for scene, q in items:
        _check_question(scene, q)


def test_all_candidates_follow_from_the_scene():
    rng = np.random.default_rng(0)
    seen = collections.Counter()
    for seed in range(30):
        scene = generate_scene(seed)
        for q in questions_for(scene, rng, per_category=None):
            _check_question(scene, q)
            seen[q.kind] += 1
    assert sorted(seen) == [  # every template family occurs
        "attribute/color", "attribute/shape", "counting/color", "counting/shape", "depth/closer", "depth/farther",
        "existence/anchored", "existence/anchored_absent", "existence/plain", "position/lr_relation",
        "position/lr_which", "position/lr_yesno", "position/ud_relation", "position/ud_which", "position/ud_yesno",
        "size/larger", "size/smaller",
    ], seen  # fmt: skip


def test_generate_items_is_deterministic(items):
    again = list(generate_items(24, seed=11))
    for (s1, q1), (s2, q2) in zip(items[:24], again, strict=True):
        assert q1 == q2 and s1.seed == s2.seed
        assert s1.rgb.tobytes() == s2.rgb.tobytes() and s1.depth.tobytes() == s2.depth.tobytes()
    other = [q.question for _, q in generate_items(24, seed=12)]
    assert other != [q.question for _, q in again]


def test_category_balance(items):
    counts = collections.Counter(q.category for _, q in items)
    assert set(counts) == set(CATEGORIES)
    assert max(counts.values()) - min(counts.values()) <= 1
    sub = [q.category for _, q in generate_items(7, seed=2, categories=["size", "depth"])]
    assert sub == ["size", "depth"] * 3 + ["size"]
    with pytest.raises(ValueError, match="unknown category 'colour'; expected one of"):
        list(generate_items(1, seed=0, categories=["colour"]))


def test_answer_balance_no_constant_answer_wins(items):
    by_cat = collections.defaultdict(list)
    for _, q in items:
        by_cat[q.category].append(q)
    for cat, qs in by_cat.items():
        top, n = collections.Counter(q.answer for q in qs).most_common(1)[0]
        assert n / len(qs) <= 0.6, (cat, top, n)
        opt = [q for q in qs if q.options]
        if opt:  # "always the first option / first-named object"
            assert sum(q.answer == q.options[0] for q in opt) / len(opt) <= 0.6, cat
        yn = [q for q in qs if q.answer_type == "yes_no"]
        if yn:
            assert 0.4 <= sum(q.answer == "yes" for q in yn) / len(yn) <= 0.6, cat
    counting = collections.Counter(q.answer for q in by_cat["counting"])
    assert {"1", "2", "3", "4"} <= set(counting)
    assert len({q.answer for q in by_cat["attribute"]}) >= 8
    lr = collections.Counter(q.answer for q in by_cat["position"] if q.answer in ("left", "right"))
    assert abs(lr["left"] - lr["right"]) <= 2


def test_answer_class_and_questions_for():
    scene = generate_scene(3)  # gray cylinder 0, orange cube 1, gray cube 2, orange cone 3: no size pair
    qs = questions_for(scene, np.random.default_rng(1))
    # one question per category by default (the answers themselves are re-derived in the tests above)
    assert [(q.category, q.answer, answer_class(q)) for q in qs] == [
        ("depth", "gray cube", "first"),  # an option question: which option, not the object
        ("position", "no", "no"),
        ("counting", "2", "2"),
        ("existence", "no", "no"),
        ("attribute", "gray", "color"),  # attribute: what is asked
    ]
    second = dataclasses.replace(qs[0], answer=qs[0].options[1])
    assert answer_class(second) == "second"
    assert answer_class(dataclasses.replace(qs[0], answer="left")) == "left"  # relation words are themselves
    with pytest.raises(ValueError, match="unknown category 'reaching'; expected one of"):
        candidate_questions(scene, "reaching")
    assert qs[0].to_dict() == {
        "category": "depth", "question": "Which is closer to the camera, the gray cube or the orange cube?",
        "answer": "gray cube", "answer_type": "option", "evidence": [2, 1],
        "boxes": [[45.0, 70.0, 148.0, 167.0], [61.0, 45.0, 118.0, 77.0]],
        "options": ["gray cube", "orange cube"], "kind": "depth/closer",
    }  # fmt: skip
