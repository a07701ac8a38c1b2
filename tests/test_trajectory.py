"""The reverse-expansion / forward-inference builder on hand-checked examples (spec section 2)."""

import numpy as np
import pytest

from sifthinker.data.trajectory import (
    TrajectoryConfig,
    build_trajectory,
    expansion_step,
    merge_overlapping,
    normalize_boxes,
    place_distractor,
    reverse_expand,
)
from sifthinker.geometry import box_iou


def test_centred_box_takes_one_pixel_step_then_fast_expansion():
    # rx = 1 - 0.4 - 0.6 = 0 and ry = 0, so step = max(0, 0, 1) = 1 pixel.
    frames = reverse_expand([(40, 40, 60, 60)], 100, 100)
    assert frames == [
        [(40, 40, 60, 60)],
        [(39, 39, 61, 61)],
        [(39, 39, 80.5, 80.5)],  # fast: right/bottom grow by half of the remaining 39 px
        [(0, 0, 100, 100)],
    ]


def test_corner_box_step_and_clip():
    # W=200, H=100: rx = 1 - 0.05 - 0.15 = 0.8 -> 0.8*200/5 = 32; ry = 1 - 0.1 - 0.2 = 0.7 -> 14; step 32.
    assert expansion_step([(10, 10, 30, 20)], 200, 100, 5) == pytest.approx(32)
    frames = reverse_expand([(10, 10, 30, 20)], 200, 100)
    assert frames[1] == [(0, 0, 62, 52)]
    assert frames[2] == [(0, 0, 131, 76)]
    assert frames[-1] == [(0, 0, 200, 100)]


def test_neighbouring_boxes_merge_into_their_union():
    # rx = 1 - 0.21 - 0.20 = 0.59 -> 11.8 px; ry = 0.7 -> 14 px: the grown boxes overlap and merge.
    frames = reverse_expand([(10, 10, 20, 20), (21, 10, 30, 20)], 100, 100)
    assert frames[1] == [(0, 0, 44, 34)]


def test_distant_boxes_stay_separate_for_all_expansions():
    frames = reverse_expand([(10, 10, 20, 20), (80, 80, 90, 90)], 100, 100)
    assert frames[1] == [(9, 9, 21, 21), (79, 79, 91, 91)]
    assert len(frames) == 1 + 5 + 1  # five expansions, then the full image appended
    assert frames[-1] == [(0, 0, 100, 100)]


def test_merge_overlapping_is_transitive():
    boxes = [(0, 0, 10, 10), (9, 0, 20, 10), (19, 0, 30, 10), (50, 50, 60, 60)]
    assert sorted(merge_overlapping(boxes)) == [(0, 0, 30, 10), (50, 50, 60, 60)]


@pytest.mark.parametrize("seed", range(20))
def test_distractor_touches_a_corner_without_overlap(seed):
    rng = np.random.default_rng(seed)
    orig = (120.0, 80.0, 180.0, 140.0)
    d = place_distractor(orig, 320, 240, rng)
    assert d is not None
    assert 0 <= d[0] < d[2] <= 320 and 0 <= d[1] < d[3] <= 240
    inter_w = min(d[2], orig[2]) - max(d[0], orig[0])
    inter_h = min(d[3], orig[3]) - max(d[1], orig[1])
    assert inter_w <= 1e-9 or inter_h <= 1e-9  # zero-area overlap
    corners_o = {(orig[i], orig[j]) for i in (0, 2) for j in (1, 3)}
    corners_d = {(d[i], d[j]) for i in (0, 2) for j in (1, 3)}
    assert corners_o & corners_d, "the distractor shares a corner with the original box"
    w, h = d[2] - d[0], d[3] - d[1]
    assert 60 * 1.2 * 0.7 - 1e-6 <= w <= 60 * 1.2 * 1.3 + 1e-6 and w == pytest.approx(h)


def test_distractor_falls_back_to_random_placement():
    # The box fills the middle: no diagonal neighbour fits, so placement is random with IoU < 0.001.
    box = (5.0, 5.0, 60.0, 60.0)
    d = place_distractor(box, 200, 65, np.random.default_rng(0))
    assert d is not None and box_iou(d, box) < 0.001
    # inside the image, right of the box (the only room), as tall as the image allows, width 55 * 1.2 * U(0.7, 1.3)
    assert 60.0 - 1e-9 <= d[0] and d[2] <= 200 and (d[1], d[3]) == (0.0, 65.0)
    assert 55 * 1.2 * 0.7 - 1e-6 <= d[2] - d[0] <= 55 * 1.2 * 1.3 + 1e-6


def test_distractor_is_seeded():
    orig = (120.0, 80.0, 180.0, 140.0)
    runs = [place_distractor(orig, 320, 240, np.random.default_rng(seed)) for seed in (7, 7, 8, 9)]
    assert runs[0] == runs[1]  # the same seed places it identically
    assert len({runs[1], runs[2], runs[3]}) == 3  # other seeds elsewhere


def test_forward_order_depths_and_gt_last():
    depth = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (100, 1))  # depth grows left to right
    gt = [(10.0, 10.0, 30.0, 20.0)]
    kinds = set()
    for seed in range(30):
        traj = build_trajectory(gt, depth, np.random.default_rng(seed))
        names = [s.kind for s in traj.steps]
        kinds.add(tuple(names))
        assert names in (["full", "expanded", "gt"], ["full", "distractor", "expanded", "gt"])  # one GT box
        assert traj.steps[0].boxes == ((0.0, 0.0, 1.0, 1.0),)
        assert traj.steps[-1].boxes == ((0.05, 0.1, 0.15, 0.2),)
        # mean depth of columns 10..29 of a 0..1 ramp over 200 columns
        assert traj.steps[-1].depths[0] == pytest.approx(np.linspace(0, 1, 200)[10:30].mean(), abs=1e-3)
    # the distractor is drawn with probability 1/2: both forms occur over 30 seeds
    assert kinds == {("full", "distractor", "expanded", "gt"), ("full", "expanded", "gt")}


def test_multi_box_trajectory_has_merged_union_step():
    depth = np.zeros((100, 100), dtype=np.float32)
    traj = build_trajectory([(10, 10, 20, 20), (80, 80, 90, 90)], depth, np.random.default_rng(1),
                            TrajectoryConfig(distractor_prob=0.0))
    assert [s.kind for s in traj.steps] == ["full", "merged", "expanded", "gt"]
    assert traj.steps[1].boxes == ((0.09, 0.09, 0.91, 0.91),)  # the union of the expanded boxes
    # one reverse-expansion step of each box (see test_distant_boxes_stay_separate_for_all_expansions)
    assert traj.steps[2].boxes == ((0.09, 0.09, 0.21, 0.21), (0.79, 0.79, 0.91, 0.91))
    assert traj.steps[3].boxes == ((0.1, 0.1, 0.2, 0.2), (0.8, 0.8, 0.9, 0.9))


def test_evidence_filling_the_image_degenerates():
    depth = np.zeros((50, 50), dtype=np.float32)
    traj = build_trajectory([(0, 0, 50, 50)], depth, np.random.default_rng(0), TrajectoryConfig(distractor_prob=0.0))
    assert len(traj.steps) == 1  # full == expanded == gt collapse; builders reject this by min_steps


def test_normalize_boxes_keeps_positive_extent():
    assert normalize_boxes([(0.0, 0.0, 0.1, 0.1)], 1000, 1000) == ((0.0, 0.0, 0.001, 0.001),)
    assert normalize_boxes([(10, 20, 30, 40)], 200, 100) == ((0.05, 0.2, 0.15, 0.4),)
