"""The four GRPO-SIF rewards (spec 3) with TRL's reward-function signature.

Every function is ``f(completions, **columns) -> list[float]``. A completion is a plain string or a
conversational message list (the last assistant message is scored). Columns are lists aligned with
the completions (TRL repeats each row per rollout): ``response`` (GT answer), ``answer_type``
(optional), ``problem`` and ``image`` (the progress key), GT boxes as ``gt_boxes`` (per-axis
normalised) or SIF-50K's ``normalized_solution_round`` (``{"bbox_3d": [...]}`` or its JSON text),
``depth_map`` (a float ``.npy`` path or an array), optional ``options`` / ``candidates`` for the
verifier and ``id`` for error messages. Other columns (TRL's ``prompts``, ...) are ignored.

Blame decides between 0 and an error. A malformed completion is the model's fault and scores 0: each
reward reads leniently (``trace.extract_answer`` / ``extract_areas``), so a broken format with a
correct ``<answer>`` keeps its answer credit. Missing or unusable ground truth (an absent column, a
None row, no boxes, boxes outside [0, 1], an unreadable depth map) is a data bug and raises
``ValueError`` naming the column and row: a reward silently stuck at 0 trains on noise (spec 6).

With equal weights a perfect completion without progress bonus scores 4; each progress term adds at
most 1 and 6 is reachable (s = 1 after a stored mean of 0, a first focus disjoint from the GT), so
the spec's "[0, 6)" is really [0, 6].
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sifthinker.answers import Judge, canonical_answer_type, infer_answer_type, score_answer
from sifthinker.depth import mean_depth
from sifthinker.geometry import iou_h
from sifthinker.names import REWARDS
from sifthinker.progress import ProgressStore, progress_key
from sifthinker.reward_inputs import (
    BOX_COLUMNS,
    BoxT,
    completion_text,
    depth_array,
    ground_truth,
    gt_answer,
    gt_boxes,
    image_id,
    optional_column,
    per_item,
    sanitize,
)
from sifthinker.trace import extract_answer, extract_areas, validate

__all__ = ["BOX_COLUMNS", "DEPTH_EPS", "DEPTH_TOLERANCE", "REWARD_FUNCS", "answer_reward", "answer_scores", "box_reward"]
__all__ += ["completion_text", "depth_ok", "depth_reward", "format_reward", "get_reward_funcs"]
__all__ += ["make_answer_reward", "make_total_reward", "total_reward"]

log = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]
DEPTH_TOLERANCE = 0.1
# D(box) = 0 (a box entirely on the nearest surface) would make |d - D| / D undefined; comparing
# |d - D| <= 0.1 * max(D, 1e-3) keeps the relative rule elsewhere and accepts d within 1e-4 of 0,
# which a 3-decimal depth can state only as d = 0.
DEPTH_EPS = 1e-3
# Absolute slack for float rounding, so that exactly 10% (e.g. d = 0.55, D = 0.5) passes.
_FLOAT_SLACK = 1e-9


# ---- inputs ---------------------------------------------------------------------------------------


# ---- r_format -------------------------------------------------------------------------------------


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion is a strictly valid SIF trace (``trace.validate`` finds nothing), else 0.0."""
    return [1.0 if not validate(completion_text(c)) else 0.0 for c in completions]


# ---- r_answer -------------------------------------------------------------------------------------


def _options(value: Any) -> dict[str, str] | None:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(value)}
    return None


def _answer_kind(answer_type: Any, gt: str) -> str:
    if isinstance(answer_type, str) and answer_type.strip():
        try:
            return canonical_answer_type(answer_type)
        except ValueError:
            # A typo in the data must not zero the reward silently: warn and infer the type instead.
            log.warning("unknown answer_type %r; inferring it from the ground truth", answer_type)
    return infer_answer_type(gt)  # None, NaN from pandas, or unknown


def _judge_scores(judge: Judge, items: list[tuple[str, str | None, str]]) -> list[float]:
    """The judge's scores clipped to [0, 1]; a failing judge or a non-finite score gives 0."""
    try:
        batch = getattr(judge, "score_batch", None)
        raw = batch(items) if callable(batch) else [judge.score(*it) for it in items]  # type: ignore[arg-type]
        values = [float(v) for v in raw]
    except Exception as exc:  # a broken judge costs the free-text items their credit, not the run
        log.warning("judge failed on %d answers: %s", len(items), exc)
        return [0.0] * len(items)
    return [min(1.0, max(0.0, v)) if math.isfinite(v) else 0.0 for v in values]


def answer_scores(completions: Sequence[Any], judge: Judge | None = None, **kwargs: Any) -> list[float]:
    """The answer score s in [0, 1] per completion (no progress term).

    Closed-form types go to the deterministic verifier; ``free`` answers go to ``judge`` when one is
    given (else a normalised exact match). A missing ``<answer>`` scores 0; a missing or empty GT
    ``response`` raises ValueError.
    """
    n = len(completions)
    gts = ground_truth(kwargs, "answer_reward", ("response",), gt_answer, n)
    types, problems = optional_column(kwargs, "answer_type", n), optional_column(kwargs, "problem", n)
    opts, cands = optional_column(kwargs, "options", n), optional_column(kwargs, "candidates", n)
    preds = [extract_answer(completion_text(c)) for c in completions]
    scores, judged = [0.0] * n, []
    for i in range(n):
        if preds[i] is None:
            continue  # E1/E4: no answer scores 0
        kind = _answer_kind(types[i], gts[i])
        if kind == "free" and judge is not None:
            judged.append(i)
            continue
        names = None if cands[i] is None else [str(c) for c in cands[i]]
        scores[i] = score_answer(preds[i], gts[i], kind, options=_options(opts[i]), candidates=names)
    if judged and judge is not None:
        items = [(str(problems[i] or ""), preds[i], gts[i]) for i in judged]
        for i, v in zip(judged, _judge_scores(judge, items), strict=True):
            scores[i] = v
    return scores


def make_answer_reward(store: ProgressStore | None = None, judge: Judge | None = None) -> RewardFunc:
    """An ``answer_reward`` with the progress term: r = s + max(0, s - s_prev).

    Completions are grouped by progress key (question, image) within the call. For each group,
    s_prev = ``store.get(key)`` from the previous visit (None on the first visit: progress term 0), then
    the group mean of s is stored, also when it is 0 (the original skipped zeros, defect P2). Without
    a store, r = s. Rows without a ``problem`` get no progress term. A failing store is logged and
    treated as "no previous visit" so that an infrastructure hiccup cannot stop training.

    Under multi-GPU training TRL calls the reward on each rank's slice, so one prompt's rollouts may
    be split over ranks: each rank then stores its part's mean (last writer wins) and s_prev is the
    previous visit's partial mean.
    """

    def answer_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        s = answer_scores(completions, judge, **kwargs)
        if store is None:
            return s
        n = len(completions)
        problems, images = optional_column(kwargs, "problem", n), optional_column(kwargs, "image", n)
        groups: dict[str, list[int]] = {}
        for i in range(n):
            if problems[i] is not None:
                groups.setdefault(progress_key(str(problems[i]), image_id(images[i])), []).append(i)
        rewards = list(s)
        for key, idx in groups.items():
            try:
                prev = store.get(key)
            except Exception as exc:
                log.warning("progress store get failed: %s", exc)
                prev = None
            if prev is not None:
                for i in idx:
                    rewards[i] = s[i] + max(0.0, s[i] - prev)
            try:
                store.put(key, sum(s[i] for i in idx) / len(idx))
            except Exception as exc:
                log.warning("progress store put failed: %s", exc)
        return rewards

    return answer_reward


answer_reward: RewardFunc = make_answer_reward()


# ---- r_box ----------------------------------------------------------------------------------------


def _box_score(text: str, gt: list[BoxT]) -> float:
    areas = [a for a in extract_areas(text) if a]
    if not areas:
        return 0.0
    end = [sanitize(b) for b in areas[-1]]
    # P_start: the first area that is not the single full-image box. With none (only full-image areas)
    # P_start = P_end, so the progress term is 0: there was no focus to improve upon.
    first = next((a for a in areas if not (len(a) == 1 and a[0].is_full_image())), None)
    start = end if first is None else [sanitize(b) for b in first]
    e = float(iou_h(end, gt))
    return e + max(0.0, e - float(iou_h(start, gt)))


def box_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """r_box = IoU_h(P_end, G) + max(0, IoU_h(P_end, G) - IoU_h(P_start, G)) in [0, 2].

    P_end is the last parseable area's boxes; no parseable area scores 0. G comes from ``gt_boxes`` or
    else ``normalized_solution_round``; neither column, or a row without usable boxes: ValueError.
    """
    gts = ground_truth(kwargs, "box_reward", BOX_COLUMNS, gt_boxes, len(completions))
    return per_item(completions, gts, "box", _box_score)


# ---- r_depth --------------------------------------------------------------------------------------


def depth_ok(stated: float, true: float) -> bool:
    """|d - D| <= 0.1 * max(D, DEPTH_EPS) (up to float rounding): the stated depth is within 10%."""
    return abs(stated - true) <= DEPTH_TOLERANCE * max(true, DEPTH_EPS) + _FLOAT_SLACK


def _depth_score(text: str, arr: np.ndarray) -> float:
    boxes = [b for area in extract_areas(text) for b in area]
    if not boxes:
        return 0.0
    # sifthinker.depth.mean_depth is the data builder's D(box): floor(x1*W)..ceil(x2*W), >= 1 pixel.
    hits = sum(depth_ok(b.depth, mean_depth(arr, sanitize(b))) for b in boxes)
    return hits / len(boxes)


def depth_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """r_depth: the fraction of boxes over all parseable areas whose stated depth is within 10% of D(box).

    A missing ``depth_map`` column, or a row whose map is None or cannot be read: ValueError.
    """
    maps = ground_truth(kwargs, "depth_reward", ("depth_map",), depth_array, len(completions))
    return per_item(completions, maps, "depth", _depth_score)


# ---- total and registry ---------------------------------------------------------------------------


def make_total_reward(
    weights: Mapping[str, float] | None = None, store: ProgressStore | None = None, judge: Judge | None = None
) -> RewardFunc:
    """R = sum of weight * reward over format, answer, box, depth (weights default to 1 each).

    A component with weight 0 is not computed at all, so it neither needs its ground-truth column nor
    (for the answer reward) touches the store. Ground-truth errors of the others propagate.
    """
    w = dict.fromkeys(REWARDS, 1.0)
    for k, v in (weights or {}).items():
        if k not in w:
            raise ValueError(f"unknown reward component {k!r}; expected {REWARDS}")
        w[k] = float(v)
    funcs = {"format": format_reward, "answer": make_answer_reward(store, judge), "box": box_reward,
             "depth": depth_reward}

    def total_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        total = [0.0] * len(completions)
        for name in REWARDS:
            if w[name] != 0.0:
                for i, v in enumerate(funcs[name](completions, **kwargs)):
                    total[i] += w[name] * v
        return total

    return total_reward


total_reward: RewardFunc = make_total_reward()

REWARD_FUNCS: dict[str, RewardFunc] = {"format": format_reward, "answer": answer_reward, "box": box_reward}
REWARD_FUNCS |= {"depth": depth_reward, "total": total_reward}


def get_reward_funcs(
    names: Sequence[str], store: ProgressStore | None = None, judge: Judge | None = None
) -> list[RewardFunc]:
    """Reward functions for TRL's ``reward_funcs``, in order (names with or without ``_reward``).

    ``answer`` and ``total`` are built with ``store`` and ``judge``. TRL logs each function under its
    ``__name__``, which are distinct. ``total`` cannot be combined with components: it would count them
    twice and, with a store, update the progress record twice per step.
    """
    keys = [n.removesuffix("_reward") for n in names]
    for k in keys:
        if k not in REWARD_FUNCS:
            raise ValueError(f"unknown reward {k!r}; expected one of {sorted(REWARD_FUNCS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate reward names in {list(names)}")
    if "total" in keys and len(keys) > 1:
        raise ValueError("'total' already includes every component; use it alone or list components")
    built = {"answer": lambda: make_answer_reward(store, judge),
             "total": lambda: make_total_reward(store=store, judge=judge)}
    return [built[k]() if k in built else REWARD_FUNCS[k] for k in keys]
