"""The SIF trace format (spec section 1): strict validation, parsing, rendering, lenient extraction.

``<think><area>[{"bbox_2d":[x1,y1,x2,y2],"depth":d}, ...]</area><text>...</text>...</think>``
followed by ``<answer>...</answer>``; boxes per-axis normalised to [0, 1], depth in [0, 1] (0 = nearest),
every number with at most 3 decimals.

* strict: :func:`validate` (all problems, never raises; ``r_format`` is ``validate(text) == []``),
  :func:`parse` (raises on the first problem in document order), :func:`render` (canonical text).
* lenient: :func:`extract_answer`, :func:`extract_areas` recover what they can from a malformed
  completion, so the answer, box and depth rewards do not depend on the format reward.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

FULL_IMAGE: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
MAX_DECIMALS = 3
_COORD_NAMES = ("x1", "y1", "x2", "y2")
_TOP_TAGS = ("think", "answer")
# Tolerant of case and inner spaces on purpose: "<Area >" is reported as a malformed tag instead of
# being silently treated as plain text, which would produce a far less helpful message.
_TAG_RE = re.compile(r"<\s*(/?)\s*(think|answer|area|text)\s*>", re.IGNORECASE)
_PLAIN_NUMBER_RE = re.compile(r"-?\d+(?:\.(\d+))?")


def _key(m: re.Match[str]) -> tuple[bool, str]:
    """(is closing, lower-case name) of a matched tag."""
    return m.group(1) == "/", m.group(2).lower()


class TraceFormatError(ValueError):
    """A text is not a valid SIF trace; the message names the first problem found."""


@dataclass(frozen=True)
class Box:
    """One focused region: per-axis normalised corners and the stated mean relative depth."""

    x1: float
    y1: float
    x2: float
    y2: float
    depth: float

    def xyxy(self) -> tuple[float, float, float, float]:
        """The corners as an ``(x1, y1, x2, y2)`` tuple (the geometry module's box type)."""
        return (self.x1, self.y1, self.x2, self.y2)

    def is_full_image(self) -> bool:
        """True when the box is exactly ``[0, 0, 1, 1]`` (depth is irrelevant)."""
        return self.xyxy() == FULL_IMAGE


@dataclass(frozen=True)
class Step:
    """One ``<area>``/``<text>`` pair."""

    boxes: tuple[Box, ...]
    text: str


@dataclass(frozen=True)
class Trace:
    """A parsed trace: the reasoning steps and the final answer (texts are stripped)."""

    steps: tuple[Step, ...]
    answer: str

    @property
    def first_focus(self) -> Step | None:
        """The first step that is not exactly the single full-image box (``P_start`` of r_box)."""
        for step in self.steps:
            if not (len(step.boxes) == 1 and step.boxes[0].is_full_image()):
                return step
        return None

    @property
    def last_boxes(self) -> tuple[Box, ...]:
        """The boxes of the last area (the grounding answer, ``P_end`` of r_box); empty if no steps."""
        return self.steps[-1].boxes if self.steps else ()


# ---- strict checking ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Num:
    """A JSON number with its raw token, so decimals and exponents are judged on what was written."""

    value: float
    raw: str
    finite: bool = True


def _json_with_raw_numbers(content: str) -> Any:
    # json hands the hooks the raw token text; float(raw) would lose "0.1000" vs "0.1" and "1e-1".
    return json.loads(
        content,
        parse_float=lambda s: _Num(float(s), s),
        parse_int=lambda s: _Num(float(s), s),  # float(s), not float(int(s)): huge ints give inf
        parse_constant=lambda s: _Num(float("nan"), s, finite=False),
    )


def _snippet(s: str, limit: int = 40) -> str:
    s = " ".join(s.split())
    return repr(s if len(s) <= limit else s[: limit - 3] + "...")


def _show(v: Any) -> str:
    """Short description of a parsed JSON value for messages (raw text for numbers)."""
    if isinstance(v, _Num):
        return v.raw
    return json.dumps(v) if v is None or isinstance(v, bool | str) else f"a JSON {type(v).__name__}"


def _check_number(v: Any, where: str, problems: list[str]) -> float | None:
    """Check one value is a finite plain number in [0, 1] with <= 3 decimals; return it or None."""
    if isinstance(v, bool) or not isinstance(v, _Num):
        # Booleans are excluded explicitly: in Python True == 1, which would pass a naive check.
        problems.append(f"{where} must be a number, got {_show(v)}")
        return None
    if not v.finite:
        problems.append(f"{where} must be a finite number, got {v.raw}")
        return None
    n_before = len(problems)
    m = _PLAIN_NUMBER_RE.fullmatch(v.raw)
    if m is None:
        problems.append(f"{where} ({v.raw}) must be written as a plain decimal, without an exponent")
    elif m.group(1) is not None and len(m.group(1)) > MAX_DECIMALS:
        problems.append(f"{where} ({v.raw}) has more than {MAX_DECIMALS} decimals")
    if not 0.0 <= v.value <= 1.0:
        problems.append(f"{where} ({v.raw}) must be in [0, 1]")
    return v.value if len(problems) == n_before else None


def _check_area(content: str, label: str, problems: list[str]) -> tuple[Box, ...] | None:
    """Strictly check an area's JSON content; append problems; return the boxes when all is well."""
    try:
        data = _json_with_raw_numbers(content)
    except (ValueError, RecursionError) as exc:  # absurdly nested JSON must not make validate() raise
        problems.append(f"{label}: invalid JSON ({exc})")
        return None
    if not isinstance(data, list):
        problems.append(f"{label}: must be a JSON list of boxes, got {type(data).__name__}")
        return None
    if not data:
        problems.append(f"{label}: the box list is empty")
        return None
    n_before = len(problems)
    boxes: list[Box] = []
    for j, item in enumerate(data, start=1):
        where = f"{label}: box {j}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object with keys bbox_2d and depth")
            continue
        keys = set(item)
        for missing in sorted({"bbox_2d", "depth"} - keys):
            problems.append(f"{where}: missing key {missing!r}")
        for extra in sorted(keys - {"bbox_2d", "depth"}):
            problems.append(f"{where}: unexpected key {extra!r}")
        coords: list[float | None] = [None] * 4
        bbox = item.get("bbox_2d")
        if "bbox_2d" in item:
            if not isinstance(bbox, list) or len(bbox) != 4:
                problems.append(f"{where}: bbox_2d must be a list of 4 numbers")
            else:
                coords = [
                    _check_number(v, f"{where}: {n}", problems)
                    for v, n in zip(bbox, _COORD_NAMES, strict=True)
                ]
        depth = _check_number(item["depth"], f"{where}: depth", problems) if "depth" in item else None
        x1, y1, x2, y2 = coords
        if x1 is not None and x2 is not None and not x2 > x1:
            problems.append(f"{where}: x2 ({bbox[2].raw}) must be greater than x1 ({bbox[0].raw})")
        if y1 is not None and y2 is not None and not y2 > y1:
            problems.append(f"{where}: y2 ({bbox[3].raw}) must be greater than y1 ({bbox[1].raw})")
        if len(problems) == n_before and None not in coords and depth is not None:
            boxes.append(Box(float(x1), float(y1), float(x2), float(y2), float(depth)))  # type: ignore[arg-type]
    return tuple(boxes) if len(problems) == n_before else None


def _check_think(
    text: str, start: int, end: int, tags: list[re.Match[str]], out: list[tuple[int, str]]
) -> tuple[Step, ...] | None:
    """Check the alternating area/text pairs in ``text[start:end]``; return the steps when valid."""
    n_before = len(out)
    elements: list[tuple[str, str, int]] = []  # (name, raw content, position of the opening tag)
    open_tag: re.Match[str] | None = None
    expected = "area"
    cursor = start
    for m in (t for t in tags if start <= t.start() < end):
        closing, name = _key(m)
        if open_tag is not None:
            open_name = open_tag.group(2).lower()
            if closing and name == open_name:
                elements.append((name, text[open_tag.end() : m.start()], open_tag.start()))
                expected = "text" if name == "area" else "area"
                open_tag, cursor = None, m.end()
            else:
                # Report and skip the tag, keeping the element open, so one stray tag yields one message.
                out.append((m.start(), f"think: tag {m.group(0)} inside <{open_name}> (nested or unclosed)"))
            continue
        if (stray := text[cursor : m.start()]).strip():
            out.append((cursor, f"think: stray text outside <area>/<text>: {_snippet(stray)}"))
        cursor = m.end()
        if name in _TOP_TAGS:
            out.append((m.start(), f"think: stray tag {m.group(0)} inside <think>"))
        elif closing:
            out.append((m.start(), f"think: {m.group(0)} without a matching opening tag"))
        else:
            if name != expected:
                # Here the previous element has the same kind as this tag, so count that kind.
                prev = f"after {name} {sum(e[0] == name for e in elements)}" if elements else "first"
                out.append((m.start(), f"think: expected <{expected}> {prev}, found <{name}>"))
            open_tag = m
    if open_tag is not None:
        out.append((open_tag.start(), f"think: <{open_tag.group(2).lower()}> is never closed"))
    elif text[cursor:end].strip():
        out.append((cursor, f"think: stray text outside <area>/<text>: {_snippet(text[cursor:end])}"))
    if not elements and open_tag is None:
        out.append((start, "think: must contain at least one <area>/<text> pair"))
    elif elements and elements[-1][0] == "area" and open_tag is None:
        out.append((elements[-1][2], "think: must end with a <text> after the last <area>"))

    boxes_per_area: list[tuple[Box, ...] | None] = []
    texts: list[str] = []
    for name, content, pos in elements:
        if name == "area":
            area_problems: list[str] = []
            boxes_per_area.append(_check_area(content, f"area {len(boxes_per_area) + 1}", area_problems))
            out.extend((pos, p) for p in area_problems)
        else:
            texts.append(content.strip())
            if not texts[-1]:
                out.append((pos, f"text {len(texts)} is empty"))
    if len(out) > n_before:
        return None
    # No problems means elements alternate area, text, area, text, ... so zip pairs them correctly.
    return tuple(Step(b, t) for b, t in zip(boxes_per_area, texts, strict=True) if b is not None)


def _check(text: str) -> tuple[Trace | None, list[str]]:
    """Run every strict check; return the trace (when valid) and problems in document order."""
    out: list[tuple[int, str]] = []
    tags = list(_TAG_RE.finditer(text))
    for m in tags:
        canonical = f"<{m.group(1)}{m.group(2).lower()}>"
        if m.group(0) != canonical:
            out.append((m.start(), f"malformed tag {m.group(0)!r}; write {canonical!r}"))

    def find(key: tuple[bool, str], after: int = 0) -> re.Match[str] | None:
        return next((m for m in tags if m.start() >= after and _key(m) == key), None)

    counts_ok = True
    for closing, name in ((False, "think"), (True, "think"), (False, "answer"), (True, "answer")):
        if (n := sum(_key(m) == (closing, name) for m in tags)) != 1:
            counts_ok = False
            # Position -1: a missing or repeated top-level tag is the most fundamental problem.
            out.append((-1, f"expected exactly one <{'/' if closing else ''}{name}>, found {n}"))

    t_open = find((False, "think"))
    t_close = find((True, "think"), t_open.end()) if t_open else None
    a_open = find((False, "answer"), t_close.end() if t_close else 0)
    a_close = find((True, "answer"), a_open.end()) if a_open else None
    if counts_ok and None in (t_open, t_close, a_open, a_close):
        out.append((-1, "tags out of order: expected <think>...</think> followed by <answer>...</answer>"))

    steps = _check_think(text, t_open.end(), t_close.start(), tags, out) if t_open and t_close else None
    answer = ""
    if a_open and a_close:
        for m in tags:
            if a_open.end() <= m.start() < a_close.start():
                out.append((m.start(), f"answer: stray tag {m.group(0)} inside <answer>"))
        answer = text[a_open.end() : a_close.start()].strip()
        if not answer:
            out.append((a_open.start(), "answer is empty"))
    if t_open and t_close and a_open and a_close:
        for lo, hi, where in (
            (0, t_open.start(), "before <think>"),
            (t_close.end(), a_open.start(), "between </think> and <answer>"),
            (a_close.end(), len(text), "after </answer>"),
        ):
            if text[lo:hi].strip():
                out.append((lo, f"text {where} is not allowed: {_snippet(text[lo:hi])}"))
    out.sort(key=lambda pm: pm[0])  # stable: messages at one position keep their checking order
    problems = [msg for _, msg in out]
    if problems or steps is None:
        return None, problems
    return Trace(steps, answer), []


def validate(text: str) -> list[str]:
    """Return every problem that makes ``text`` an invalid SIF trace (empty list = valid). Never raises."""
    if not isinstance(text, str):
        return [f"trace must be a string, got {type(text).__name__}"]
    return _check(text)[1]


def parse(text: str) -> Trace:
    """Parse a strictly valid SIF trace; raise :class:`TraceFormatError` naming the first problem."""
    if not isinstance(text, str):
        raise TraceFormatError(f"trace must be a string, got {type(text).__name__}")
    trace, problems = _check(text)
    if trace is None:
        raise TraceFormatError(problems[0] if problems else "invalid trace")
    return trace


# ---- rendering ------------------------------------------------------------------------------------
def fmt_num(x: float) -> str:
    """Format a number rounded to 3 decimals, compactly: ``0``, ``1``, ``0.5``, ``0.25``, ``0.125``."""
    s = f"{float(x):.{MAX_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _render_box(b: Box) -> str:
    coords = ",".join(fmt_num(v) for v in b.xyxy())
    return f'{{"bbox_2d":[{coords}],"depth":{fmt_num(b.depth)}}}'


def render(trace: Trace) -> str:
    """Write ``trace`` as canonical SIF text (numbers rounded to 3 decimals, texts stripped).

    ``parse(render(t)) == t`` for every trace already in canonical form (3-decimal numbers, stripped
    texts), e.g. any trace returned by :func:`parse`. Raises :class:`TraceFormatError` when the result
    would not be valid (no steps, empty text, a box out of range after rounding, tags inside a text).
    """
    lines = ["<think>"]
    for step in trace.steps:
        lines.append("<area>[" + ", ".join(_render_box(b) for b in step.boxes) + "]</area>")
        lines.append(f"<text>{step.text.strip()}</text>")
    lines.append("</think>")
    lines.append(f"<answer>{trace.answer.strip()}</answer>")
    out = "\n".join(lines)
    problems = validate(out)
    if problems:
        raise TraceFormatError(f"cannot render a valid trace: {problems[0]}")
    return out


# ---- lenient extraction (for rewards that must not depend on the format reward) -------------------
# The content may not contain another "<area>", so "<area><area>[...]</area>" yields the inner list.
_AREA_RE = re.compile(r"<area>((?:(?!<area>).)*?)</area>", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """Content (stripped) of the last ``<answer>...</answer>`` anywhere in ``text``, or None.

    The opening tag taken is the last one before the last closing tag, so a stray earlier ``<answer>``
    does not leak into the result.
    """
    if not isinstance(text, str):
        return None
    close = text.rfind("</answer>")
    open_ = text.rfind("<answer>", 0, max(close, 0))
    return None if close < 0 or open_ < 0 else text[open_ + len("<answer>") : close].strip()


def _lenient_box(item: Any) -> Box | None:
    """A Box from any object with a 4-number ``bbox_2d`` and a numeric ``depth`` (no range checks)."""
    if not isinstance(item, dict) or not isinstance(item.get("bbox_2d"), list) or len(item["bbox_2d"]) != 4:
        return None
    raw = [*item["bbox_2d"], item.get("depth")]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in raw):
        return None
    # float(v) rather than math.isfinite(v): a 400-digit JSON integer would overflow isfinite.
    vals = [float(v) if not isinstance(v, int) or abs(v) < 10**300 else math.inf for v in raw]
    return Box(*vals) if all(math.isfinite(v) for v in vals) else None


def extract_areas(text: str) -> list[list[Box]]:
    """Every parseable ``<area>`` in ``text``, in order, skipping broken ones.

    Lenient on purpose: ranges, decimals, corner order and extra keys are not checked (that is the format
    reward's job), and a lone object is taken as a one-box list. An area is skipped as a whole when its
    JSON does not parse, it is empty, or any item lacks a 4-number ``bbox_2d`` or a numeric ``depth``,
    because a partially read area would misstate which boxes the model chose.
    """
    if not isinstance(text, str):
        return []
    areas: list[list[Box]] = []
    for m in _AREA_RE.finditer(text):
        try:
            data = json.loads(m.group(1))
        except (ValueError, RecursionError):
            continue
        items = [data] if isinstance(data, dict) else data
        if not isinstance(items, list) or not items:
            continue
        boxes = [_lenient_box(item) for item in items]
        if all(b is not None for b in boxes):
            areas.append(boxes)  # type: ignore[arg-type]
    return areas
