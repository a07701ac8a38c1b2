"""Tests for the GRPO-SIF rewards (sifthinker.rewards.reward_funcs); expected values are computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sifthinker.method.answers import FakeJudge
from sifthinker.method.geometry import iou_h
from sifthinker.rewards.progress import MemoryProgressStore, SQLiteProgressStore
from sifthinker.rewards.reward_funcs import (
    REWARD_FUNCS,
    answer_reward,
    box_reward,
    completion_text,
    depth_ok,
    depth_reward,
    format_reward,
    get_reward_funcs,
    make_answer_reward,
    make_total_reward,
    total_reward,
)

FULL = (0.0, 0.0, 1.0, 1.0)
G = (0.2, 0.2, 0.6, 0.6)  # area 0.16


def area(*boxes: tuple[float, float, float, float], depth: float = 0.5) -> str:
    return json.dumps([{"bbox_2d": list(b), "depth": depth} for b in boxes])


def sif(areas: list[str], answer: str | None = "yes") -> str:
    body = "\n".join(f"<area>{a}</area>\n<text>step {i + 1}</text>" for i, a in enumerate(areas))
    tail = "" if answer is None else f"\n<answer>{answer}</answer>"
    return f"<think>\n{body}\n</think>{tail}"


def chat(text: str | None) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def cols(n: int, **per_item: object) -> dict[str, list]:
    """Reward columns for n completions of one prompt (TRL repeats a row per rollout)."""
    item = {
        "response": "yes",
        "answer_type": "yes_no",
        "problem": "Is there a cube?",
        "image": "img.png",
        "gt_boxes": [G],
        "depth_map": np.full((10, 20), 0.5, dtype=np.float16),
        **per_item,
    }
    return {k: [v] * n for k, v in item.items()}


# ---- geometry cases the box reward relies on (hand-computed) ---------------------------------------


def test_iou_h_hand_computed() -> None:
    a, b = (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)
    # One of two GT boxes: union IoU = 0.25 / 0.5 = 0.5; one matched pair with IoU 1 -> mean 1.
    # iou_h = (0.5 + 1) / 2 = 0.75.
    assert iou_h([a], [a, b]) == pytest.approx(0.75)
    # An extra predicted box: union P = 0.5, union G = 0.25, inter 0.25 -> 0.5; matched pair IoU 1.
    assert iou_h([a, (0.5, 0.0, 1.0, 0.5)], [a]) == pytest.approx(0.75)
    # Two GT boxes, predictions listed in the other order. G1 = (0,0,.4,.4) area .16, G2 = (.6,.6,1,1)
    # area .16; P = [(.6,.6,1,1), (0,0,.4,.2)]. Union IoU = (.16 + .08) / .32 = .75. Hungarian pairs
    # P1-G2 (IoU 1) and P2-G1 (IoU .08/.16 = .5): mean .75 (index pairing would give 0). iou_h = .75.
    g2 = [(0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 1.0, 1.0)]
    assert iou_h([(0.6, 0.6, 1.0, 1.0), (0.0, 0.0, 0.4, 0.2)], g2) == pytest.approx(0.75)
    assert iou_h(g2[::-1], g2) == pytest.approx(1.0)


# ---- r_format ---------------------------------------------------------------------------------------


def test_format_reward() -> None:
    good = sif([area(FULL), area(G)])
    bad = [good + " trailing", "<answer>yes</answer>", "", sif([area(G)], answer=None)]
    assert format_reward([good, *bad]) == [1.0, 0.0, 0.0, 0.0, 0.0]


# ---- r_box ------------------------------------------------------------------------------------------


def test_box_reward_progress_term() -> None:
    half = (0.2, 0.2, 0.6, 0.4)  # inside G, half its area: IoU 0.5, union IoU 0.5 -> iou_h 0.5
    comps = [
        sif([area(FULL), area(half), area(G)]),  # end 1, start .5: 1 + (1 - .5) = 1.5
        sif([area(FULL), area(G), area(half)]),  # end .5, start 1: .5 + max(0, -.5) = .5 (clipped)
        sif([area(FULL), area(G)]),  # the only focus is the end: P_start = P_end, no bonus -> 1
        sif([area(FULL)]),  # no focus at all: P_start = P_end = full; iou_h = .16 -> .16
        sif([area((0.7, 0.7, 0.9, 0.9)), area(G)]),  # disjoint first focus: 1 + (1 - 0) = 2
    ]
    got = box_reward(comps, gt_boxes=[[G]] * len(comps))
    assert got == pytest.approx([1.5, 0.5, 1.0, 0.16, 2.0])


def test_box_reward_multi_box() -> None:
    g2 = [(0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 1.0, 1.0)]
    # start: one GT box exactly -> union .16/.32 = .5, pair IoU 1 -> .75; end: both, swapped -> 1.
    comp = sif([area(FULL), area(g2[0]), area(g2[1], g2[0])])
    assert box_reward([comp], gt_boxes=[g2]) == pytest.approx([1.0 + 0.25])
    # gt_boxes as an array and as one flat box both work.
    assert box_reward([comp], gt_boxes=[np.array(g2)]) == pytest.approx([1.25])
    assert box_reward([sif([area(G)])], gt_boxes=[list(G)]) == pytest.approx([1.0])


def test_box_reward_reads_the_last_area_as_written() -> None:
    """D4: r_box reads the last <area>; one that does not parse scores 0, never an earlier area."""
    gt = {"gt_boxes": [[G]]}
    # The exact GT box in the second area, garbage JSON in the last: 0 (the old reader fell back to G: 1).
    assert box_reward([sif([area(FULL), area(G), "[{bbox_2d: oops"])], **gt) == [0.0]
    # So is a last area with an item lacking bbox_2d, or with 3 corners.
    no_box = json.dumps([{"bbox_2d": list(G), "depth": 0.5}, {"depth": 0.5}])
    three = json.dumps([{"bbox_2d": [0.2, 0.2, 0.6], "depth": 0.5}])
    assert box_reward([sif([area(G), no_box]), sif([area(G), three])], gt_boxes=[[G]] * 2) == [0.0, 0.0]
    # An unparseable first focus earns no progress term: G in the end scores 1, not 1 + (1 - 0) = 2.
    assert box_reward([sif([area(FULL), "[oops", area(G)])], **gt) == [1.0]
    # Out-of-range corners are clipped; reversed ones have no area: IoU 0.
    weird = sif([area((-0.5, 0.2, 0.6, 0.6)), area((0.6, 0.6, 0.2, 0.2))])
    assert box_reward([weird], **gt) == [0.0]
    # (-0.5, .2, .6, .6) clipped is (0, .2, .6, .6), area .24, holding G (.16): IoU .16/.24 = 2/3 both ways.
    assert box_reward([sif([area((-0.5, 0.2, 0.6, 0.6))])], **gt) == pytest.approx([2 / 3])


def test_box_reward_needs_no_depth() -> None:
    """D4: r_box needs boxes, not depths (the old reader dropped the area and fell back)."""
    half = (0.2, 0.2, 0.6, 0.4)  # inside G, half its area: iou_h .5
    no_depth = json.dumps([{"bbox_2d": list(G)}])
    bad_depth = json.dumps([{"bbox_2d": list(G), "depth": "near"}])
    comps = [sif([area(FULL), area(half), no_depth]), sif([area(FULL), area(half), bad_depth])]
    # end G (1), start half (.5): 1 + (1 - .5) = 1.5 for both (old: end = half, .5)
    assert box_reward(comps, gt_boxes=[[G]] * 2) == pytest.approx([1.5, 1.5])


def test_box_reward_reads_sif50k_column_like_gt_boxes() -> None:
    # The same completions and hand-computed values as test_box_reward_progress_term, with G given as
    # the released SIF-50K column, both as a dict and as its JSON text.
    half = (0.2, 0.2, 0.6, 0.4)
    comps = [
        sif([area(FULL), area(half), area(G)]),  # 1 + (1 - .5) = 1.5
        sif([area(FULL), area(G), area(half)]),  # .5, progress clipped
        sif([area(FULL), area(G)]),  # 1
        sif([area(FULL)]),  # .16
        sif([area((0.7, 0.7, 0.9, 0.9)), area(G)]),  # 2
    ]
    nsr = {"bbox_3d": [list(G)], "illegal_content": False}
    expected = [1.5, 0.5, 1.0, 0.16, 2.0]
    assert box_reward(comps, normalized_solution_round=[nsr] * 5) == pytest.approx(expected)
    assert box_reward(comps, normalized_solution_round=[json.dumps(nsr)] * 5) == pytest.approx(expected)
    # Two GT boxes (test_box_reward_multi_box): start .75, end 1 -> 1.25, from either column.
    g2 = [[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]]
    comp = sif([area(FULL), area(tuple(g2[0])), area(tuple(g2[1]), tuple(g2[0]))])
    assert box_reward([comp], normalized_solution_round=[json.dumps({"bbox_3d": g2})]) == pytest.approx([1.25])
    # When both columns are present, ours wins: here they disagree and gt_boxes decides.
    both = box_reward([sif([area(G)])], gt_boxes=[[G]], normalized_solution_round=[{"bbox_3d": g2}])
    assert both == pytest.approx([1.0])


# ---- ground truth: missing or unusable columns are data bugs, not zero rewards -----------------------


def test_missing_ground_truth_columns_raise_naming_them() -> None:
    comp = sif([area(FULL), area(G)])
    with pytest.raises(ValueError, match="box_reward") as box_err:
        box_reward([comp], response=["x"])
    assert "'gt_boxes'" in str(box_err.value) and "'normalized_solution_round'" in str(box_err.value)
    with pytest.raises(ValueError, match="answer_reward needs the ground-truth column 'response'"):
        answer_reward([comp], gt_boxes=[[G]])
    with pytest.raises(ValueError, match="'response'"):
        make_answer_reward(MemoryProgressStore())([comp], problem=["q"])
    with pytest.raises(ValueError, match="depth_reward needs the ground-truth column 'depth_map'"):
        depth_reward([comp], gt_boxes=[[G]])
    # A column of None (how a dataset spells an absent column) counts as missing too.
    with pytest.raises(ValueError, match="'depth_map'"):
        depth_reward([comp], depth_map=None)


def test_total_propagates_ground_truth_errors_and_skips_zero_weights() -> None:
    comp = sif([area(FULL), area(G)])
    kw = {k: v for k, v in cols(1).items() if k != "depth_map"}
    with pytest.raises(ValueError, match="'depth_map'"):
        total_reward([comp], **kw)
    with pytest.raises(ValueError, match="'depth_map'"):
        get_reward_funcs(["total"])[0]([comp], **kw)
    # A 0-weight component does not demand its column: format 1 + answer 1 + box 1 = 3.
    assert make_total_reward({"depth": 0.0})([comp], **kw) == [3.0]
    # Only the format reward left: no ground truth needed at all.
    assert make_total_reward({"answer": 0, "box": 0, "depth": 0})([comp, "junk"]) == [1.0, 0.0]


def test_unusable_ground_truth_rows_raise_naming_column_and_row(tmp_path: Path) -> None:
    comp = sif([area(G)])
    cases = [
        ({"gt_boxes": [[G], None]}, box_reward, "column 'gt_boxes', row 1: no ground-truth boxes"),
        ({"gt_boxes": [[G], []]}, box_reward, "column 'gt_boxes', row 1: no ground-truth boxes"),
        ({"gt_boxes": [[[0.1, 0.2]], [G]]}, box_reward, "column 'gt_boxes', row 0: not a list"),
        # pixels where per-axis normalised boxes belong (spec 6): not silently ~0
        ({"gt_boxes": [[G], [[10, 20, 30, 40]]]}, box_reward, "row 1: boxes outside \\[0, 1\\]"),
        ({"gt_boxes": [[(0.5, 0.2, 0.4, 0.6)], [G]]}, box_reward, "row 0: a box with x2 <= x1"),
        ({"normalized_solution_round": [{"bbox_3d": []}] * 2}, box_reward,
         "column 'normalized_solution_round', row 0: no ground-truth boxes"),
        ({"normalized_solution_round": [{"bbox_3d": [G]}, {"illegal_content": False}]}, box_reward,
         "column 'normalized_solution_round', row 1: expected a mapping with 'bbox_3d'"),
        ({"normalized_solution_round": ['{"bbox_3d": [[0, 0, 1, 1]]}', "{bbox_3d"]}, box_reward,
         "column 'normalized_solution_round', row 1: not valid JSON"),
        ({"normalized_solution_round": [None, None]}, box_reward,
         "column 'normalized_solution_round', row 0: expected a mapping with 'bbox_3d', got None"),
        ({"response": ["yes", None]}, answer_reward, "column 'response', row 1: no ground-truth answer"),
        ({"response": ["  ", "yes"]}, answer_reward, "column 'response', row 0: no ground-truth answer"),
        ({"response": ["yes", float("nan")]}, answer_reward, "column 'response', row 1"),
        ({"depth_map": [np.zeros((4, 4)), None]}, depth_reward, "column 'depth_map', row 1: no depth map"),
        ({"depth_map": [np.zeros((4, 4)), np.zeros(4)]}, depth_reward, "row 1: .*finite 2-D array"),
        ({"depth_map": [np.full((4, 4), np.nan), np.zeros((4, 4))]}, depth_reward, "row 0: .*finite 2-D"),
    ]
    for columns, fn, message in cases:
        with pytest.raises(ValueError, match=message):
            fn([comp, comp], **columns)
    missing = tmp_path / "missing.npy"
    with pytest.raises(ValueError, match=f"column 'depth_map', row 0: depth map file not found: '{missing}'"):
        depth_reward([comp], depth_map=[str(missing)])
    garbage = tmp_path / "garbage.npy"
    garbage.write_text("not an array")
    with pytest.raises(ValueError, match="column 'depth_map', row 0: cannot read depth map"):
        depth_reward([comp], depth_map=[garbage])
    # The record id, when the dataset has one, says which record to fix.
    with pytest.raises(ValueError, match=r"row 1 \(id 'rec-7'\): no ground-truth boxes"):
        box_reward([comp, comp], gt_boxes=[[G], None], id=["rec-3", "rec-7"])


def test_malformed_completion_with_good_ground_truth_still_scores_zero() -> None:
    kw = cols(2)
    assert box_reward(["", "<area>[{oops</area>"], **kw) == [0.0, 0.0]
    assert depth_reward([None, chat(None)], **kw) == [0.0, 0.0]
    assert answer_reward(["<answer>", 42], **kw) == [0.0, 0.0]


# ---- r_depth ----------------------------------------------------------------------------------------


def test_depth_tolerance_boundary() -> None:
    dm = np.full((10, 20), 0.5, dtype=np.float16)  # D = 0.5 for every box
    comps = [sif([area(G, depth=d)]) for d in (0.5, 0.55, 0.45, 0.555, 0.445)]
    # 0.55 and 0.45 are exactly 10% off (pass); 0.555 and 0.445 are 11% off (fail).
    assert depth_reward(comps, depth_map=[dm] * 5) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert depth_ok(0.0, 0.0) and depth_ok(0.0001, 0.0) and not depth_ok(0.001, 0.0)


def test_depth_reward_fraction_and_pixels(tmp_path: Path) -> None:
    dm = np.zeros((10, 20), dtype=np.float16)
    dm[:, :10] = 0.2
    dm[:, 10:] = 0.8
    path = tmp_path / "d.npy"
    np.save(path, dm)
    left = {"bbox_2d": [0, 0, 0.5, 1], "depth": 0.2}  # columns 0..9: D = 0.2, ok
    mid = {"bbox_2d": [0.25, 0, 0.75, 1], "depth": 0.5}  # columns 5..14: half .2, half .8 -> D = .5, ok
    right = {"bbox_2d": [0.5, 0, 1, 1], "depth": 0.2}  # D = 0.8: wrong
    comp = sif([json.dumps([left, right]), json.dumps([mid])])
    assert depth_reward([comp], depth_map=[str(path)]) == pytest.approx([2 / 3])
    assert depth_reward([comp], depth_map=[path]) == pytest.approx([2 / 3])  # Path works, cached
    # A sub-pixel box still covers one pixel: x in [0.01, 0.02] -> column 0.
    tiny = sif([json.dumps([{"bbox_2d": [0.01, 0.0, 0.02, 0.05], "depth": 0.2}])])
    assert depth_reward([tiny], depth_map=[dm]) == [1.0]


def test_depth_reward_never_credits_inverted_zero_area_or_depthless_boxes() -> None:
    """D4: an inverted or zero-area box never counts; a box without a depth counts as a miss."""
    dm = np.full((10, 20), 0.5, dtype=np.float16)  # D = 0.5 everywhere, so d = 0.5 would match anywhere
    good = {"bbox_2d": list(G), "depth": 0.5}
    inverted = {"bbox_2d": [0.6, 0.6, 0.2, 0.2], "depth": 0.5}  # the old reward collapsed it to a pixel: hit
    flat = {"bbox_2d": [0.2, 0.3, 0.6, 0.3], "depth": 0.5}  # zero height
    outside = {"bbox_2d": [1.2, 0.2, 1.5, 0.6], "depth": 0.5}  # clipped away entirely
    no_depth = {"bbox_2d": list(G)}
    comps = [sif([json.dumps([good, b])]) for b in (inverted, flat, outside, no_depth)]
    assert depth_reward(comps, depth_map=[dm] * 4) == [0.5] * 4  # 1 hit of 2 boxes each
    # An area that does not parse adds no boxes at all (its count is unknown).
    assert depth_reward([sif([json.dumps([good]), "[oops"])], depth_map=[dm]) == [1.0]


# ---- r_answer and its progress term -----------------------------------------------------------------


def _group(answers: list[str | None], image: str = "img.png") -> tuple[list[str], dict[str, list]]:
    comps = [sif([area(G)], answer=a) for a in answers]
    n = len(comps)
    return comps, {
        "response": ["yes"] * n,
        "answer_type": ["yes_no"] * n,
        "problem": ["Is there a cube?"] * n,
        "image": [image] * n,
    }


def test_answer_reward_without_store() -> None:
    comps, kw = _group(["yes", "no", None, "Yes, it is."])
    assert answer_reward(comps, **kw) == [1.0, 0.0, 0.0, 1.0]


def test_answer_progress_across_calls() -> None:
    store = MemoryProgressStore()
    reward = make_answer_reward(store)
    assert reward.__name__ == "answer_reward"
    # Visit 1: no previous record -> r = s; the group mean 0.25 is stored.
    comps, kw = _group(["yes", "no", "no", "no"])
    assert reward(comps, **kw) == [1.0, 0.0, 0.0, 0.0]
    # Visit 2: mean rises to 0.5. Correct answers get 1 + (1 - 0.25) = 1.75; wrong ones no bonus.
    comps, kw = _group(["yes", "yes", "no", "no"])
    assert reward(comps, **kw) == [1.75, 1.75, 0.0, 0.0]
    # Visit 3: worse (mean 0): no bonus and no penalty; the 0 is stored (the original skipped it).
    comps, kw = _group(["no", "no", "no", "no"])
    assert reward(comps, **kw) == [0.0] * 4
    # Visit 4: after a stored 0, a correct answer earns the full bonus: 1 + (1 - 0) = 2.
    comps, kw = _group(["yes", "no", "no", "no"])
    assert reward(comps, **kw) == [2.0, 0.0, 0.0, 0.0]


def test_answer_progress_groups_by_question_and_image() -> None:
    store = MemoryProgressStore()
    reward = make_answer_reward(store)
    c1, k1 = _group(["no", "no"], image="a.png")
    c2, k2 = _group(["yes", "yes"], image="b.png")
    both = {k: k1[k] + k2[k] for k in k1}
    assert reward(c1 + c2, **both) == [0.0, 0.0, 1.0, 1.0]
    # Same question, other image: separate records. a.png had mean 0, b.png mean 1.
    assert reward(c2 + c2, **{k: k1[k] + k2[k] for k in k1}) == [2.0, 2.0, 1.0, 1.0]


def test_answer_progress_with_sqlite_store_across_instances(tmp_path: Path) -> None:
    comps, kw = _group(["no", "no"])
    make_answer_reward(SQLiteProgressStore(tmp_path / "p.db"))(comps, **kw)
    # A "restarted" run: a new store object on the same file still knows the previous visit.
    comps, kw = _group(["yes", "no"])
    assert make_answer_reward(SQLiteProgressStore(tmp_path / "p.db"))(comps, **kw) == [2.0, 0.0]


def test_answer_reward_judge_only_for_free_text() -> None:
    judge = FakeJudge()
    reward = make_answer_reward(judge=judge)
    comps = [sif([area(G)], answer=a) for a in ("the cat sleeps", "yes", None)]
    kw = {
        "response": ["The cat sleeps.", "yes", "x"],
        "answer_type": ["free", "yes_no", "free"],
        "problem": ["What does the cat do?", "q", "q"],
    }
    assert reward(comps, **kw) == [1.0, 1.0, 0.0]
    assert judge.calls == [("What does the cat do?", "the cat sleeps", "The cat sleeps.")]


def test_answer_reward_options_and_candidates_columns() -> None:
    comps = [sif([area(G)], answer=a) for a in ("the red cube", "red cube, blue sphere")]
    kw = {
        "response": ["B", "red cube"],
        "answer_type": ["option", "name"],
        "options": [["blue sphere", "red cube"], None],
        "candidates": [None, ["red cube", "blue sphere"]],
    }
    assert answer_reward(comps, **kw) == [1.0, 0.0]


# ---- inputs: conversational, malformed ----------------------------------------------------------------


def test_completion_text_forms() -> None:
    assert completion_text("x") == "x"
    assert completion_text(chat("x")) == "x"
    assert (
        completion_text(
            [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image"},
                        {"type": "text", "text": "b"},
                    ],
                }
            ]
        )
        == "ab"
    )
    assert completion_text([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]) == "a"
    assert completion_text(chat(None)) == "" and completion_text(None) == "" and completion_text(3) == ""


def test_conversational_and_plain_give_same_values() -> None:
    texts = [sif([area(FULL), area(G)]), sif([area(G, depth=0.9)], answer="no"), "garbage"]
    convs = [chat(t) for t in texts]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in texts]
    kw = cols(3)
    for name, fn in REWARD_FUNCS.items():
        plain = fn(texts, **kw)
        assert fn(convs, **kw) == plain == fn(parts, **kw), name


@pytest.mark.parametrize(
    "comp",
    [
        "",
        None,
        42,
        chat(None),
        [{"role": "assistant"}],
        [],
        [None],
        chat([None, {"type": "text"}]),
        "<think><area>{not json</area><text>t</text></think><answer>yes</answer>",
        '<think><area>[{"bbox_2d": [0, 0, 1], "depth": "x"}]</area></think>',
        "<area>[]</area><area>[1, 2]</area><area>null</area><area>" + "[" * 5000 + "</area>",
        "<answer></answer>",
        "<answer>yes",
    ],
)
def test_malformed_never_raises(comp: object) -> None:
    """A malformed completion is the model's fault: every reward scores it 0, except the answer reward
    when an <answer>yes</answer> (the ground truth here) can still be read."""
    kw = cols(1)
    credit = 1.0 if isinstance(comp, str) and "<answer>yes</answer>" in comp else 0.0
    expected = {"format": 0.0, "answer": credit, "box": 0.0, "depth": 0.0, "total": credit, "progress": credit}
    got = {name: fn([comp], **kw) for name, fn in
           {**REWARD_FUNCS, "progress": make_answer_reward(MemoryProgressStore())}.items()}
    assert got == {name: [v] for name, v in expected.items()}


def test_broken_format_keeps_answer_credit() -> None:
    comp = "<think><area>{not json</area><text>t</text></think><answer>yes</answer>"
    kw = cols(1)
    assert format_reward([comp], **kw) == [0.0]
    assert answer_reward([comp], **kw) == [1.0]
    assert box_reward([comp], **kw) == [0.0] and depth_reward([comp], **kw) == [0.0]
    assert total_reward([comp], **kw) == [1.0]


def test_misaligned_columns_raise() -> None:
    with pytest.raises(ValueError, match="column 'response' has 1 values for 2 completions"):
        answer_reward(["a", "b"], response=["yes"])


# ---- total ------------------------------------------------------------------------------------------


def test_perfect_completion_scores_four_and_bound() -> None:
    perfect = sif([area(FULL), area(G)])  # depth 0.5 everywhere, as the map says
    assert total_reward([perfect], **cols(1)) == [4.0]
    # Both progress terms at their maximum: a stored group mean of 0 and a disjoint first focus.
    store = MemoryProgressStore()
    reward = make_total_reward(store=store)
    wrong = sif([area((0.7, 0.7, 0.9, 0.9)), area(G)], answer="no")
    best = sif([area((0.7, 0.7, 0.9, 0.9)), area(G)])
    assert reward([wrong], **cols(1)) == [1.0 + 0.0 + 2.0 + 1.0]
    # R = 1 + (1 + 1) + (1 + 1) + 1 = 6: the bound is reached, so R lies in [0, 6], not [0, 6).
    assert reward([best], **cols(1)) == [6.0]


def test_weights() -> None:
    comp = sif([area(FULL), area(G)])
    assert make_total_reward({"format": 0.5, "box": 2.0, "depth": 0.0})([comp], **cols(1)) == [
        0.5 + 1 + 2 + 0
    ]
    with pytest.raises(ValueError, match="unknown reward component 'fromat'"):
        make_total_reward({"fromat": 1.0})


def test_get_reward_funcs() -> None:
    store = MemoryProgressStore()
    funcs = get_reward_funcs(["format", "answer_reward", "box", "depth"], store=store)
    assert [f.__name__ for f in funcs] == ["format_reward", "answer_reward", "box_reward", "depth_reward"]
    comps, kw = _group(["yes"])
    funcs[1](comps, **kw)
    assert len(store) == 1  # the built answer reward uses the given store
    assert [f.__name__ for f in get_reward_funcs(["total"])] == ["total_reward"]
    for bad, why in ((["total", "format"], "already includes every component"),
                     (["format", "format"], "duplicate reward names"), (["nope"], "unknown reward 'nope'")):
        with pytest.raises(ValueError, match=why):
            get_reward_funcs(bad)


def test_progress_key_from_decoded_images() -> None:
    # TRL may pass decoded PIL images: equal content must give the same key on every visit.
    from PIL import Image

    store = MemoryProgressStore()
    reward = make_answer_reward(store)
    comps, kw = _group(["no"])
    reward(comps, **{**kw, "image": [Image.new("RGB", (8, 6), (255, 0, 0))]})
    comps, kw = _group(["yes"])
    assert reward(comps, **{**kw, "image": [Image.new("RGB", (8, 6), (255, 0, 0))]}) == [2.0]
    assert reward(comps, **{**kw, "image": [Image.new("RGB", (8, 6), (0, 0, 255))]}) == [1.0]
    assert len(store) == 2


def test_trl_extras_and_dirty_columns() -> None:
    comps, kw = _group(["yes", "3"])
    kw = {**kw, "response": ["yes", 3], "answer_type": [float("nan"), "typo"]}
    extras = {
        "prompts": ["p", "p"],
        "completion_ids": [[1], [2]],
        "trainer_state": object(),
        "log_metric": print,
    }
    assert answer_reward(comps, **kw, **extras) == [1.0, 1.0]  # types inferred: yes_no, number


def test_failing_judge_and_store_cost_credit_not_the_run() -> None:
    class BrokenJudge:
        def score(self, question: str, pred: str, gt: str) -> float:
            raise RuntimeError("endpoint down")

    class BrokenStore:
        def get(self, key: str) -> float | None:
            raise OSError("disk")

        def put(self, key: str, value: float) -> None:
            raise OSError("disk")

    comps = [sif([area(G)], answer="the cat sleeps"), sif([area(G)], answer="yes")]
    kw = {"response": ["the cat sleeps", "yes"], "answer_type": ["free", "yes_no"], "problem": ["q", "q"]}
    assert make_answer_reward(BrokenStore(), BrokenJudge())(comps, **kw) == [0.0, 1.0]


def test_zero_weight_answer_leaves_store_alone() -> None:
    store = MemoryProgressStore()
    make_total_reward({"answer": 0.0}, store=store)([sif([area(G)])], **cols(1))
    assert len(store) == 0
