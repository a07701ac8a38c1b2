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

Areas are read as written (:func:`sifthinker.method.areas.read_areas`, spec D4): r_box scores the last
``<area>`` and is 0 when it does not parse (no falling back to an earlier one, which a policy could
exploit), needs boxes but not depths, and an inverted or zero-area box has IoU 0 and never counts as
depth-consistent. ``parity: original`` builds the original code's format, box and depth rewards instead
(:mod:`sifthinker.rewards.original`) and its progress-store rules (:class:`sifthinker.rewards.progress.ProgressExchange`),
under the same names, so the logged metrics line up.

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

from sifthinker.method.answers import (
    Judge,
    JudgeUnavailable,
    canonical_answer_type,
    infer_answer_type,
    score_answer,
)
from sifthinker.method.areas import AreaBox, read_areas
from sifthinker.method.depth import mean_depth
from sifthinker.method.geometry import iou_h
from sifthinker.method.trace import extract_answer, validate
from sifthinker.names import REWARDS
from sifthinker.rewards.inputs import (
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
from sifthinker.rewards.original import original_box_score, original_depth_score, original_format_ok
from sifthinker.rewards.progress import ProgressExchange, ProgressStore, progress_key

__all__ = ["BOX_COLUMNS", "DEPTH_EPS", "DEPTH_TOLERANCE", "REWARD_FUNCS", "answer_reward", "answer_scores", "box_reward"]
__all__ += ["completion_text", "depth_ok", "depth_reward", "format_reward", "get_reward_funcs"]
__all__ += ["make_answer_reward", "make_box_reward", "make_depth_reward", "make_format_reward"]
__all__ += ["make_total_reward", "total_reward"]

log = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]
DEPTH_TOLERANCE = 0.1
# D(box) = 0 (a box entirely on the nearest surface) would make |d - D| / D undefined; comparing
# |d - D| <= 0.1 * max(D, 1e-3) keeps the relative rule elsewhere and accepts d within 1e-4 of 0,
# which a 3-decimal depth can state only as d = 0.
DEPTH_EPS = 1e-3
# Absolute slack for float rounding, so that exactly 10% (e.g. d = 0.55, D = 0.5) passes.
_FLOAT_SLACK = 1e-9


def _named(func: RewardFunc, name: str) -> RewardFunc:
    # TRL logs each reward under its function's __name__: both parities must log under the same one.
    func.__name__ = func.__qualname__ = name
    return func


# ---- r_format -------------------------------------------------------------------------------------


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion is a strictly valid SIF trace (``trace.validate`` finds nothing), else 0.0."""
    return [1.0 if not validate(completion_text(c)) else 0.0 for c in completions]


def _original_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    return [1.0 if original_format_ok(completion_text(c)) else 0.0 for c in completions]


def make_format_reward(original: bool = False) -> RewardFunc:
    """The strict format reward, or (``original``) the original code's lenient check."""
    return _named(_original_format_reward, "format_reward") if original else format_reward


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


def _judge_scores(judge: Judge, items: list[tuple[str, str | None, str]],
                  log_metric: Callable[[str, float], None] | None = None) -> list[float]:
    """The judge's scores clipped to [0, 1]; failures score 0 and are counted in ``judge/failures``.

    :class:`JudgeUnavailable` (the judge's policy is ``stop``) propagates and ends the run.
    """
    failures_before = getattr(judge, "failures", 0)
    try:
        batch = getattr(judge, "score_batch", None)
        raw = batch(items) if callable(batch) else [judge.score(*it) for it in items]  # type: ignore[arg-type]
        values = [float(v) for v in raw]
    except JudgeUnavailable:
        raise
    except Exception as exc:  # a broken judge costs the free-text items their credit, not the run
        log.warning("judge failed on %d answers: %s", len(items), exc)
        values = [math.nan] * len(items)
    failed = getattr(judge, "failures", 0) - failures_before + sum(not math.isfinite(v) for v in values)
    if log_metric is not None:  # TRL hands reward functions a logger for per-step metrics
        log_metric("judge/answers", float(len(items)))
        log_metric("judge/failures", float(failed))
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
        for i, v in zip(judged, _judge_scores(judge, items, kwargs.get("log_metric")), strict=True):
            scores[i] = v
    return scores


def make_answer_reward(store: ProgressStore | None = None, judge: Judge | None = None, *, original: bool = False,
                       exchange: ProgressExchange | None = None) -> RewardFunc:
    """An ``answer_reward`` with the progress term: r = s + max(0, s - s_prev).

    Completions are grouped by progress key (question, image). ``exchange`` (built from ``store`` when
    not given) returns each group's s_prev from its previous visit (None on the first: progress term 0)
    and stores this visit's value: the whole group's mean of s, gathered across ranks, zeros included
    (``original``: the mean of the bonus-included reward, zero means skipped). Without either, r = s.
    Rows without a ``problem`` get no progress term.
    """
    if exchange is None and store is not None:
        exchange = ProgressExchange(store, original=original)

    def answer_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        s = answer_scores(completions, judge, **kwargs)
        if exchange is None:
            return s
        n = len(completions)
        problems, images = optional_column(kwargs, "problem", n), optional_column(kwargs, "image", n)
        groups: dict[str, list[int]] = {}
        for i in range(n):
            if problems[i] is not None:
                groups.setdefault(progress_key(str(problems[i]), image_id(images[i])), []).append(i)
        prev = exchange.visit({key: [s[i] for i in idx] for key, idx in groups.items()})
        rewards = list(s)
        for key, idx in groups.items():
            if (p := prev.get(key)) is not None:
                for i in idx:
                    rewards[i] = s[i] + max(0.0, s[i] - p)
        return rewards

    return answer_reward


answer_reward: RewardFunc = make_answer_reward()


# ---- r_box ----------------------------------------------------------------------------------------


def _box_score(text: str, gt: list[BoxT]) -> float:
    areas = read_areas(text)
    if not areas or areas[-1] is None:
        return 0.0  # D4: the last area as written; no falling back to an earlier one
    end = [sanitize(b) for b in areas[-1]]
    e = float(iou_h(end, gt))
    # P_start: the first area that is not the single full-image box. With none (only full-image areas)
    # P_start = P_end: there was no focus to improve upon. One that does not parse earns no progress
    # term (as in the original): else a garbage first area would buy the largest bonus.
    first = next((a for a in areas if a is None or not (len(a) == 1 and a[0].is_full_image())), areas[-1])
    if first is None:
        return e
    return e + max(0.0, e - float(iou_h([sanitize(b) for b in first], gt)))


def make_box_reward(original: bool = False) -> RewardFunc:
    """r_box = IoU_h(P_end, G) + max(0, IoU_h(P_end, G) - IoU_h(P_start, G)) in [0, 2].

    P_end is the last area's boxes; a last area that does not parse scores 0. G comes from
    ``gt_boxes`` or else ``normalized_solution_round``; neither column, or a row without usable boxes:
    ValueError. ``original``: the original code's reading (:func:`~sifthinker.rewards.original.original_box_score`).
    """
    score = original_box_score if original else _box_score

    def box_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        gts = ground_truth(kwargs, "box_reward", BOX_COLUMNS, gt_boxes, len(completions))
        return per_item(completions, gts, "box", score)

    return box_reward


box_reward: RewardFunc = make_box_reward()


# ---- r_depth --------------------------------------------------------------------------------------


def depth_ok(stated: float, true: float) -> bool:
    """|d - D| <= 0.1 * max(D, DEPTH_EPS) (up to float rounding): the stated depth is within 10%."""
    return abs(stated - true) <= DEPTH_TOLERANCE * max(true, DEPTH_EPS) + _FLOAT_SLACK


def _consistent(box: AreaBox, arr: np.ndarray) -> bool:
    # D4: no stated depth, or an inverted or zero-area box (as written), never counts.
    if box.depth is None or not box.has_area():
        return False
    clipped = sanitize(box)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return False  # entirely outside the image
    # sifthinker.method.depth.mean_depth is the data builder's D(box): floor(x1*W)..ceil(x2*W), >= 1 pixel.
    return depth_ok(box.depth, mean_depth(arr, clipped))


def _depth_score(text: str, arr: np.ndarray) -> float:
    boxes = [b for area in read_areas(text) if area is not None for b in area]
    return sum(_consistent(b, arr) for b in boxes) / len(boxes) if boxes else 0.0


def make_depth_reward(original: bool = False) -> RewardFunc:
    """r_depth: the fraction of boxes over all parseable areas whose stated depth is within 10% of D(box).

    A missing ``depth_map`` column, or a row whose map is None or cannot be read: ValueError.
    ``original``: the original code's rule (:func:`~sifthinker.rewards.original.original_depth_score`).
    """
    score = original_depth_score if original else _depth_score

    def depth_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        maps = ground_truth(kwargs, "depth_reward", ("depth_map",), depth_array, len(completions))
        return per_item(completions, maps, "depth", score)

    return depth_reward


depth_reward: RewardFunc = make_depth_reward()


# ---- total and registry ---------------------------------------------------------------------------


def make_total_reward(
    weights: Mapping[str, float] | None = None, store: ProgressStore | None = None, judge: Judge | None = None,
    *, original: bool = False, exchange: ProgressExchange | None = None,
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
    funcs = _components(store, judge, original, exchange)

    def total_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        total = [0.0] * len(completions)
        for name in REWARDS:
            if w[name] != 0.0:
                for i, v in enumerate(funcs[name](completions, **kwargs)):
                    total[i] += w[name] * v
        return total

    return total_reward


def _components(store: ProgressStore | None, judge: Judge | None, original: bool,
                exchange: ProgressExchange | None) -> dict[str, RewardFunc]:
    return {"format": make_format_reward(original),
            "answer": make_answer_reward(store, judge, original=original, exchange=exchange),
            "box": make_box_reward(original), "depth": make_depth_reward(original)}


total_reward: RewardFunc = make_total_reward()

REWARD_FUNCS: dict[str, RewardFunc] = {"format": format_reward, "answer": answer_reward, "box": box_reward}
REWARD_FUNCS |= {"depth": depth_reward, "total": total_reward}


def get_reward_funcs(
    names: Sequence[str], store: ProgressStore | None = None, judge: Judge | None = None, *,
    original: bool = False, exchange: ProgressExchange | None = None,
) -> list[RewardFunc]:
    """Reward functions for TRL's ``reward_funcs``, in order (names with or without ``_reward``).

    ``answer`` and ``total`` are built with ``store`` (or ``exchange``) and ``judge``; ``original``
    builds every component with the original code's behaviour (``parity: original``). TRL logs each
    function under its ``__name__``, which are distinct. ``total`` cannot be combined with components:
    it would count them twice and, with a store, update the progress record twice per step.
    """
    keys = [n.removesuffix("_reward") for n in names]
    for k in keys:
        if k not in REWARD_FUNCS:
            raise ValueError(f"unknown reward {k!r}; expected one of {sorted(REWARD_FUNCS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate reward names in {list(names)}")
    if "total" in keys and len(keys) > 1:
        raise ValueError("'total' already includes every component; use it alone or list components")
    if keys == ["total"]:
        return [make_total_reward(store=store, judge=judge, original=original, exchange=exchange)]
    funcs = _components(store, judge, original, exchange)
    return [funcs[k] for k in keys]
