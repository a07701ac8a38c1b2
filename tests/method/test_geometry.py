"""Tests of box geometry (IoU, exact unions, Hungarian matching, IoU_h) and coordinate frames."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from sifthinker.method.geometry import (
    Frame,
    box_area,
    box_iou,
    clip_box,
    convert,
    enclosing_box,
    from_norm,
    hungarian_mean_iou,
    iou_h,
    round_box,
    smart_resize,
    to_norm,
    union_area,
    union_iou,
)

approx = pytest.approx


# ---- single boxes --------------------------------------------------------------------------------
def test_box_area():
    assert box_area((0, 0, 2, 3)) == 6
    assert box_area((1, 1, 1, 5)) == 0  # degenerate
    assert box_area((2, 2, 1, 1)) == 0  # inverted


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 0, 1, 1), (0, 0, 1, 1), 1.0),  # identical
        ((0, 0, 1, 1), (2, 2, 3, 3), 0.0),  # disjoint
        ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),  # touching edges only
        ((0, 0, 1, 1), (0.25, 0.25, 0.75, 0.75), 0.25),  # nested: 0.25 / 1
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),  # partial: 1 / (4 + 4 - 1)
        ((0, 0, 2, 1), (1, 0, 3, 1), 1 / 3),  # half overlap: 1 / (2 + 2 - 1)
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # no area at all
    ],
)
def test_box_iou_hand_computed(a, b, expected):
    assert box_iou(a, b) == approx(expected)
    assert box_iou(b, a) == approx(expected)


# ---- unions --------------------------------------------------------------------------------------
def raster_union_area(boxes, lo=0.0, hi=3.0, n=900) -> float:
    """Brute-force approximation: fraction of grid-cell centres covered, times the canvas area."""
    c = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    xx, yy = np.meshgrid(c, c)
    covered = np.zeros_like(xx, dtype=bool)
    for x1, y1, x2, y2 in boxes:
        covered |= (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    return float(covered.mean()) * (hi - lo) ** 2


def inclusion_exclusion_area(boxes) -> float:
    """Exact union area by inclusion-exclusion (an independent oracle for small n)."""
    total = 0.0
    for k in range(1, len(boxes) + 1):
        for combo in itertools.combinations(boxes, k):
            inter = (
                max(b[0] for b in combo),
                max(b[1] for b in combo),
                min(b[2] for b in combo),
                min(b[3] for b in combo),
            )
            total += (-1) ** (k + 1) * box_area(inter)
    return total


def test_union_of_three_overlapping_boxes():
    boxes = [(0, 0, 2, 2), (1, 1, 3, 3), (1.5, 0, 2.5, 1)]
    # 4 + 4 + 1 - |A∩B| 1 - |A∩C| 0.5 - |B∩C| 0 + |A∩B∩C| 0 = 7.5
    assert union_area(boxes) == approx(7.5)
    assert union_area(boxes) == approx(raster_union_area(boxes), abs=0.02)


def test_union_area_simple_cases():
    assert union_area([]) == 0.0
    assert union_area([(0, 0, 1, 1), (0.2, 0.2, 0.5, 0.5)]) == approx(1.0)  # nested
    assert union_area([(0, 0, 1, 1), (2, 2, 3, 4)]) == approx(3.0)  # disjoint
    assert union_area([(0, 0, 1, 1), (0, 0, 1, 1)]) == approx(1.0)  # duplicates
    assert union_area([(0, 0, 1, 1), (0.5, 0.5, 0.5, 0.9)]) == approx(1.0)  # degenerate ignored
    assert union_area([(0, 0, 0.001, 0.001)]) == approx(1e-6)  # tiny box is not lost to a grid


@pytest.mark.parametrize("seed", range(5))
def test_union_area_matches_inclusion_exclusion_on_random_boxes(seed):
    rng = random.Random(seed)
    boxes = []
    for _ in range(rng.randint(1, 6)):
        x1, y1 = rng.uniform(0, 2.5), rng.uniform(0, 2.5)
        boxes.append((x1, y1, rng.uniform(x1, 3), rng.uniform(y1, 3)))
    assert union_area(boxes) == approx(inclusion_exclusion_area(boxes), abs=1e-9)


def test_union_iou_hand_computed():
    # Two halves against the whole: the unions coincide.
    assert union_iou([(0, 0, 1, 1), (1, 0, 2, 1)], [(0, 0, 2, 1)]) == approx(1.0)
    assert union_iou([(0, 0, 2, 2)], [(1, 1, 3, 3)]) == approx(1 / 7)
    # Union of p has area 7; g = (1,0,2,3) lies inside it, so intersection 3, union 7.
    assert union_iou([(0, 0, 2, 2), (1, 1, 3, 3)], [(1, 0, 2, 3)]) == approx(3 / 7)
    # Overlapping predictions are not double counted.
    assert union_iou([(0, 0, 1, 1), (0, 0, 1, 1)], [(0, 0, 1, 1)]) == approx(1.0)
    assert union_iou([(0, 0, 1, 1)], [(2, 2, 3, 3)]) == 0.0
    assert union_iou([], [(0, 0, 1, 1)]) == 0.0 and union_iou([(0, 0, 1, 1)], []) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_union_iou_matches_raster(seed):
    rng = random.Random(100 + seed)

    def rand_boxes(k):
        out = []
        for _ in range(k):
            x1, y1 = rng.uniform(0, 2), rng.uniform(0, 2)
            out.append((x1, y1, x1 + rng.uniform(0.3, 1), y1 + rng.uniform(0.3, 1)))
        return out

    p, g = rand_boxes(3), rand_boxes(2)
    inter_boxes = [(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])) for a in p for b in g]
    inter = raster_union_area([b for b in inter_boxes if box_area(b) > 0] or [(0, 0, 0, 0)])
    expected = inter / (raster_union_area(p) + raster_union_area(g) - inter)
    assert union_iou(p, g) == approx(expected, abs=0.01)


# ---- Hungarian matching and IoU_h ----------------------------------------------------------------
G = [(5, 0, 8, 1), (2, 0, 7, 1)]
P = [(2, 0, 5, 1), (3, 0, 8, 1)]


def test_hungarian_beats_greedy():
    # IoU matrix (rows P, columns G): [[0, 3/5], [3/5, 4/6]].
    assert box_iou(P[1], G[1]) == approx(4 / 6)
    # Greedy on the largest entry takes P2-G2 (0.667), leaving P1-G1 (0): mean 1/3.
    greedy = (box_iou(P[1], G[1]) + box_iou(P[0], G[0])) / 2
    assert greedy == approx(1 / 3)
    # The optimum crosses over: P1-G2 and P2-G1, each 0.6.
    assert hungarian_mean_iou(P, G) == approx(0.6)
    assert hungarian_mean_iou(list(reversed(P)), G) == approx(0.6)  # order-independent


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_matches_brute_force(seed):
    rng = random.Random(seed)

    def rand_boxes(k):
        return [
            (x, y, x + rng.uniform(0.1, 0.5), y + rng.uniform(0.1, 0.5))
            for x, y in ((rng.uniform(0, 0.5), rng.uniform(0, 0.5)) for _ in range(k))
        ]

    p, g = rand_boxes(rng.randint(1, 4)), rand_boxes(rng.randint(1, 4))
    small, large = (p, g) if len(p) <= len(g) else (g, p)
    best = max(
        sum(box_iou(a, b) for a, b in zip(small, perm, strict=True))
        for perm in itertools.permutations(large, len(small))
    )
    assert hungarian_mean_iou(p, g) == approx(best / len(small))


def test_unequal_counts():
    gt = [(0, 0, 1, 1)]
    extra = [(0, 0, 1, 1), (2, 0, 3, 1)]
    # Extra prediction: the matching ignores it (mean over 1 pair), the union term pays: 1 / 2.
    assert hungarian_mean_iou(extra, gt) == approx(1.0)
    assert union_iou(extra, gt) == approx(0.5)
    assert iou_h(extra, gt) == approx(0.75)
    # Missing prediction: symmetric.
    assert hungarian_mean_iou(gt, extra) == approx(1.0)
    assert iou_h(gt, extra) == approx(0.75)
    assert hungarian_mean_iou([], gt) == 0.0 and hungarian_mean_iou(gt, []) == 0.0
    assert iou_h([], gt) == 0.0


def test_iou_h_hand_computed():
    assert iou_h([(0, 0, 1, 1)], [(0, 0, 1, 1)]) == approx(1.0)
    assert iou_h([(0, 0, 2, 2)], [(1, 1, 3, 3)]) == approx(1 / 7)
    # Halves vs whole: union IoU 1, best single match 0.5.
    assert iou_h([(0, 0, 1, 1), (1, 0, 2, 1)], [(0, 0, 2, 1)]) == approx(0.75)
    # The crossing case above: union IoU is 6/6 = 1 (both unions are [2, 8]), matching 0.6.
    assert iou_h(P, G) == approx(0.5 * (1.0 + 0.6))


# ---- helpers -------------------------------------------------------------------------------------
def test_enclosing_clip_round():
    assert enclosing_box([(0.2, 0.3, 0.4, 0.5), (0.1, 0.4, 0.3, 0.9)]) == (0.1, 0.3, 0.4, 0.9)
    with pytest.raises(ValueError, match="enclosing_box needs at least one box"):
        enclosing_box([])
    assert clip_box((-5, 10, 700, 500), 640, 480) == (0.0, 10.0, 640.0, 480.0)
    assert clip_box((-0.1, 0.2, 1.3, 0.9), 1, 1) == (0.0, 0.2, 1.0, 0.9)
    assert round_box((0.12345, 0.5, 0.9999, -0.0001)) == (0.123, 0.5, 1.0, 0.0)
    assert round_box((1.23456, 2, 3, 4), ndigits=1) == (1.2, 2.0, 3.0, 4.0)


# ---- smart_resize --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hw, expected",
    [
        ((480, 640), (476, 644)),  # 17.1 -> 17 * 28, 22.9 -> 23 * 28; 306,544 px within limits
        ((1080, 1920), (728, 1316)),  # too many pixels: scaled by 1/sqrt(2073600 / 1003520), floored
        ((10, 10), (56, 56)),  # too few pixels: scaled up to 56 x 56, ceiled
        ((500, 333), (504, 336)),
        ((28, 28), (56, 56)),
    ],
)
def test_smart_resize_known_values(hw, expected):
    assert smart_resize(*hw) == expected


@pytest.mark.parametrize("hw", [(480, 640), (333, 500), (4000, 3000), (28, 5000), (7, 9), (1, 200)])
def test_smart_resize_invariants(hw):
    h, w = smart_resize(*hw)
    assert h % 28 == 0 and w % 28 == 0
    assert 56 * 56 <= h * w <= 14 * 14 * 4 * 1280
    h2, w2 = smart_resize(*hw, min_pixels=256 * 28 * 28, max_pixels=512 * 28 * 28)
    assert 256 * 28 * 28 <= h2 * w2 <= 512 * 28 * 28


def test_smart_resize_rejects_extreme_aspect_and_bad_sizes():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 1000)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(201, 1)
    with pytest.raises(ValueError, match="image size must be positive, got 0x10"):
        smart_resize(0, 10)


# ---- frames --------------------------------------------------------------------------------------
SIZES = [(640, 480), (333, 500), (500, 333), (1920, 1080), (512, 512)]  # (width, height)
NORM_BOXES = [(0.0, 0.0, 1.0, 1.0), (0.125, 0.25, 0.5, 0.75), (0.301, 0.007, 0.999, 0.458)]


@pytest.mark.parametrize("frame", list(Frame))
@pytest.mark.parametrize("wh", SIZES)
def test_round_trip_every_frame(frame, wh):
    w, h = wh
    for b in NORM_BOXES:
        there = from_norm(b, frame, w, h)
        assert to_norm(there, frame, w, h) == approx(b, abs=1e-12)
        # and back from the frame side (THOUSAND values are integers already)
        assert from_norm(to_norm(there, frame, w, h), frame, w, h) == approx(there, abs=1e-9)
    for pad in ("center", "topleft"):
        b = NORM_BOXES[1]
        assert to_norm(from_norm(b, frame, w, h, pad=pad), frame, w, h, pad=pad) == approx(b, abs=1e-12)


def test_frames_known_values():
    assert to_norm((64, 48, 320, 240), Frame.PIXEL, 640, 480) == approx((0.1, 0.1, 0.5, 0.5))
    assert from_norm((0.1, 0.1, 0.5, 0.5), "pixel", 640, 480) == approx((64, 48, 320, 240))
    # Qwen2.5-VL sees 640 x 480 as 644 x 476 (width x height).
    assert from_norm((0.5, 0.5, 1, 1), Frame.QWEN25, 640, 480) == approx((322, 238, 644, 476))
    assert to_norm((322, 238, 644, 476), Frame.QWEN25, 640, 480) == approx((0.5, 0.5, 1, 1))
    # Processor limits change the resized frame, so they must be passed through.
    small = dict(min_pixels=28 * 28, max_pixels=100 * 28 * 28)
    rh, rw = smart_resize(480, 640, **small)
    assert from_norm((0, 0, 1, 1), Frame.QWEN25, 640, 480, **small) == approx((0, 0, rw, rh))
    assert from_norm((0.1234, 0.5, 0.9996, 1), Frame.THOUSAND, 640, 480) == (123.0, 500.0, 1000.0, 1000.0)
    assert to_norm((123, 500, 1000, 1000), "norm1000", 640, 480) == approx((0.123, 0.5, 1, 1))
    assert to_norm((0.1, 0.2, 0.3, 0.4), Frame.NORM, 640, 480) == (0.1, 0.2, 0.3, 0.4)
    # VisCoT square canvas of 640 x 480: side 640, image pasted 80 px down when centred.
    assert from_norm((0, 0, 1, 1), Frame.VISCOT_SQUARE, 640, 480) == approx((0, 0.125, 1, 0.875))
    assert from_norm((0, 0, 1, 1), Frame.VISCOT_SQUARE, 640, 480, pad="topleft") == approx((0, 0, 1, 0.75))
    # Portrait 333 x 500: side 500, offset (500 - 333) // 2 = 83 px to the right.
    assert from_norm((0, 0, 1, 1), Frame.VISCOT_SQUARE, 333, 500) == approx((0.166, 0, 0.832, 1))


def test_convert_between_frames():
    w, h = 333, 500
    px = (33.3, 50.0, 166.5, 400.0)
    q = convert(px, Frame.PIXEL, Frame.QWEN25, w, h)
    rh, rw = smart_resize(h, w)
    assert q == approx((33.3 * rw / w, 50 * rh / h, 166.5 * rw / w, 400 * rh / h))
    assert convert(q, "qwen25", "pixel", w, h) == approx(px)
    assert convert(px, Frame.PIXEL, Frame.NORM, w, h) == approx((0.1, 0.1, 0.5, 0.8))
    assert convert(px, Frame.PIXEL, Frame.PIXEL, w, h) == px
    sq = convert(px, Frame.PIXEL, Frame.VISCOT_SQUARE, w, h)
    assert sq == approx(((33.3 + 83) / 500, 0.1, (166.5 + 83) / 500, 0.8))
    assert convert(sq, Frame.VISCOT_SQUARE, Frame.THOUSAND, w, h) == (100.0, 100.0, 500.0, 800.0)


def test_frame_option_errors():
    with pytest.raises(TypeError, match="unknown frame option"):
        to_norm((0, 0, 1, 1), Frame.PIXEL, 10, 10, padding="center")
    with pytest.raises(ValueError, match="pad must be"):
        to_norm((0, 0, 1, 1), Frame.VISCOT_SQUARE, 10, 20, pad="bottom")
    with pytest.raises(ValueError, match="'pixels' is not a valid Frame"):
        to_norm((0, 0, 1, 1), "pixels", 10, 10)
    with pytest.raises(ValueError, match="positive"):
        from_norm((0, 0, 1, 1), Frame.PIXEL, 0, 10)
    assert Frame("norm") is Frame.NORM and Frame.THOUSAND == "norm1000"


def test_defect_d1_square_box_read_per_axis_is_wrong():
    """D1: VisCoT's square-canvas boxes read as if per axis distort GT boxes on non-square images."""
    w, h = 640, 480
    pixel = (100, 100, 300, 200)
    square = convert(pixel, Frame.PIXEL, Frame.VISCOT_SQUARE, w, h)
    assert square == approx((100 / 640, 180 / 640, 300 / 640, 280 / 640))
    correct = to_norm(pixel, Frame.PIXEL, w, h)
    assert to_norm(square, Frame.VISCOT_SQUARE, w, h) == approx(correct)  # the fix
    misread = square  # the original: taken as if it were already per-axis normalised
    assert misread[1] == approx(0.28125) and correct[1] == approx(100 / 480)
    # same x; y: [9/32, 7/16] against [5/24, 5/12] -> overlap 13/96 over union 22/96: close to a 0.5 threshold
    assert box_iou(misread, correct) == approx(13 / 22)
    # On a square image both readings agree, which is why the defect hides on square test images.
    sq_img = convert(pixel, Frame.PIXEL, Frame.VISCOT_SQUARE, 480, 480)
    assert sq_img == approx(to_norm(pixel, Frame.PIXEL, 480, 480))
