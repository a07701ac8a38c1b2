"""Side by side with the original reward code, and each fix's effect shown by scoring both ways.

The oracle is tests/rewards/original_reference.py (a re-implementation of the authors' reward code, quirks
included); the corpus is tests/rewards/parity_corpus.py (seeded). ``fixed`` is what the project trains with,
``original`` what ``parity: original`` trains with.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import original_reference as ref
import pytest
from parity_corpus import corpus

from sifthinker.rewards.progress import MemoryProgressStore, ProgressExchange
from sifthinker.rewards.reward_funcs import (
    make_answer_reward,
    make_box_reward,
    make_depth_reward,
    make_format_reward,
)

N_WELL, N_EACH, N_MALFORMED = 2000, 300, 1200  # 4,100 completions, each scored three ways
G = (0.2, 0.2, 0.6, 0.6)


def _score(parity: str, text: str, gt, arr) -> tuple[float, float, float]:
    original = parity == "original"
    kw = {"gt_boxes": [gt], "depth_map": [arr]}
    return (make_format_reward(original)([text])[0], make_box_reward(original)([text], **kw)[0],
            make_depth_reward(original)([text], **kw)[0])


def _reference(text: str, gt, arr) -> tuple[float, float, float]:
    return ref.format_reward(text), ref.box_reward(text, [list(b) for b in gt]), ref.depth_reward(text, arr)


def _agree(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[bool, ...]:
    # 1e-9: the Hungarian mean is summed in another order; every other step is the same arithmetic.
    return tuple(abs(x - y) <= 1e-9 for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def scored():
    rows = []
    for kind, text, gt, arr in corpus(seed=7, n_well=N_WELL, n_each=N_EACH, n_malformed=N_MALFORMED):
        want = _reference(text, gt, arr)
        rows.append((kind, text, _agree(_score("fixed", text, gt, arr), want),
                     _agree(_score("original", text, gt, arr), want), want))
    return rows


def _table(rows, which: int) -> dict[str, tuple[int, int, int, int]]:
    """kind -> (cases, format agree, box agree, depth agree)."""
    out: dict[str, list[int]] = {}
    for kind, _, fixed, original, _ in rows:
        agree = (fixed, original)[which]
        c = out.setdefault(kind, [0, 0, 0, 0])
        c[0] += 1
        for k in range(3):
            c[k + 1] += agree[k]
    return {k: tuple(v) for k, v in out.items()}  # type: ignore[misc]


def test_fixed_rewards_agree_with_the_original_on_well_formed_completions(scored):
    table = _table(scored, 0)
    print("\nfixed vs original code (cases, format, box, depth agreeing):", table)
    assert table["well-formed"] == (N_WELL, N_WELL, N_WELL, N_WELL)
    # The corpus is not degenerate: boxes and depths both take many values, some above 1 (progress).
    values = Counter(round(want[1], 2) for kind, _, _, _, want in scored if kind == "well-formed")
    assert len(values) > 100 and max(values) > 1.0
    assert 0.2 < np.mean([want[2] for kind, _, _, _, want in scored if kind == "well-formed"]) < 0.8


def test_the_three_divergences_are_gone(scored):
    """The fixes of D4: these are exactly the inputs on which the old rewards disagreed with the original."""
    table = _table(scored, 0)
    # A last area that does not parse: r_box 0 (the old reader fell back to an earlier area).
    assert table["bad-last-area"][2] == N_EACH
    assert {want[1] for kind, _, _, _, want in scored if kind == "bad-last-area"} == {0.0}
    # Boxes without a depth still count for r_box (the old reader dropped the whole area).
    assert table["no-depth"][2] == N_EACH
    # An inverted box is never depth-consistent (the old reward collapsed it to one credited pixel line).
    assert table["inverted"][3] == N_EACH


def test_original_parity_reproduces_the_original_everywhere(scored):
    table = _table(scored, 1)
    print("\nparity: original vs original code:", table)
    for kind, (n, f, b, d) in table.items():
        assert (f, b, d) == (n, n, n), kind
    # The malformed corpus does exercise the differences: the fixed rewards disagree on part of it.
    fixed = _table(scored, 0)["malformed"]
    assert min(fixed[1:]) < N_MALFORMED


# ---- each fix's effect: the same completions scored both ways -----------------------------------------


def _both(text: str, gt=(G,), arr=None) -> dict[str, tuple[float, float, float]]:
    arr = np.full((10, 20), 0.5, dtype=np.float32) if arr is None else arr
    return {p: _score(p, text, list(gt), arr) for p in ("fixed", "original")}


def _trace(*areas: str, answer: str = "yes", before: str = "", after: str = "") -> str:
    body = "".join(f"<area>{a}</area><text>step {i}</text>" for i, a in enumerate(areas))
    return f"{before}<think>{body}</think><answer>{answer}</answer>{after}"


GOOD = json.dumps([{"bbox_2d": list(G), "depth": 0.5}])


def test_lenient_format_check_effect():
    lenient = [
        _trace(GOOD, before="Let me think. "),  # text outside the tags
        _trace(json.dumps([{"bbox_2d": list(G), "depth": 0.5, "label": "cube"}])),  # an extra key
        _trace('[{"bbox_2d": [0.2, 0.2, 0.6, 0.6], "depth": 0.5000}]'),  # 4 written decimals, value 0.5
        _trace('[{"bbox_2d": [false, false, true, true], "depth": 0.5}]'),  # booleans as 0/1
        _trace("[]"),  # no box at all
    ]
    for text in lenient:
        assert [_both(text)[p][0] for p in ("fixed", "original")] == [0.0, 1.0], text
    # Both reject what neither tolerates.
    assert _both(_trace('[{"bbox_2d": [0.2, 0.2, 0.6, 0.6], "depth": 0.5555}]'))["original"][0] == 0.0
    assert _both(_trace(GOOD))["fixed"][0] == _both(_trace(GOOD))["original"][0] == 1.0


def test_depth_rulings_effect():
    arr = np.full((10, 20), 0.5, dtype=np.float32)
    # Exactly 10% off: within the spec's rule; the original's float division (0.10000000000000009) rejects it.
    tie = _trace(json.dumps([{"bbox_2d": list(G), "depth": 0.55}]))
    assert _both(tie, arr=arr)["fixed"][2] == 1.0 and _both(tie, arr=arr)["original"][2] == 0.0
    # D = 0 (a box on the nearest surface) stated as 0: consistent; the original divided by zero.
    zero = np.zeros((10, 20), dtype=np.float32)
    at_zero = _trace(json.dumps([{"bbox_2d": list(G), "depth": 0.0}]))
    assert _both(at_zero, arr=zero)["fixed"][2] == 1.0 and _both(at_zero, arr=zero)["original"][2] == 0.0
    # A zero-area box inside one pixel column (x = .125 on 20 columns: pixel 2): the original credits it.
    flat = _trace(json.dumps([{"bbox_2d": [0.125, 0.2, 0.125, 0.6], "depth": 0.5}]))
    assert _both(flat, arr=arr)["fixed"][2] == 0.0 and _both(flat, arr=arr)["original"][2] == 1.0
    # A box without a depth: a miss for us; the original left it out of the count: 1 of 2 vs 1 of 1.
    mixed = _trace(json.dumps([{"bbox_2d": list(G), "depth": 0.5}, {"bbox_2d": [0.1, 0.1, 0.3, 0.3]}]))
    assert _both(mixed, arr=arr)["fixed"][2] == 0.5 and _both(mixed, arr=arr)["original"][2] == 1.0


def test_box_reading_effect():
    # An item without bbox_2d in the last area: the area does not parse for us (0); the original kept G.
    partial = _trace(json.dumps([{"bbox_2d": list(G), "depth": 0.5}, {"depth": 0.5}]))
    assert _both(partial)["fixed"][1] == 0.0 and _both(partial)["original"][1] == 1.0
    # Corners outside the image are clipped for us (IoU 2/3) and used raw by the original (.16/.48 = 1/3).
    wide = _trace(json.dumps([{"bbox_2d": [-0.6, 0.2, 0.6, 0.6], "depth": 0.5}]))
    assert _both(wide)["fixed"][1] == pytest.approx(2 / 3) and _both(wide)["original"][1] == pytest.approx(1 / 3)


def _visit(reward, answers: list[str]) -> list[float]:
    comps = [_trace(GOOD, answer=a) for a in answers]
    n = len(comps)
    return reward(comps, response=["yes"] * n, answer_type=["yes_no"] * n, problem=["q"] * n, image=["i"] * n)


def test_progress_store_rules_effect():
    """P2/D4: fixed stores the group mean of s, zeros included; original the bonus-included mean, no zeros."""
    fixed, original = MemoryProgressStore(), MemoryProgressStore()
    r_fixed = make_answer_reward(fixed)
    r_orig = make_answer_reward(exchange=ProgressExchange(original, original=True))
    # Visit 1: nobody answers; fixed stores 0, the original stores nothing.
    assert _visit(r_fixed, ["no"] * 4) == _visit(r_orig, ["no"] * 4) == [0.0] * 4
    assert len(fixed) == 1 and len(original) == 0
    # Visit 2: one right. Fixed: 1 + (1 - 0) = 2 (progress over the stored 0). Original: no record, so 1.
    assert _visit(r_fixed, ["yes", "no", "no", "no"]) == [2.0, 0.0, 0.0, 0.0]
    assert _visit(r_orig, ["yes", "no", "no", "no"]) == [1.0, 0.0, 0.0, 0.0]
    (k,) = original._data
    assert fixed.get(k) == 0.25 and original.get(k) == 0.25
    # Visit 3: two right. Both 1 + (1 - .25) = 1.75; fixed stores mean s .5, the original mean r .875.
    assert _visit(r_fixed, ["yes", "yes", "no", "no"]) == _visit(r_orig, ["yes", "yes", "no", "no"])
    assert fixed.get(k) == 0.5 and original.get(k) == pytest.approx(0.875)
