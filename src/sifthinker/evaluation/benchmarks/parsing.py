"""Shared parsing and reporting for the question-answering benchmarks (SpatialBench, CV-Bench, V*, SAT).

Strict parsing (the project's default scoring):

* :func:`parse_answer`: the text of the response's ``<answer>`` block, or None (unparseable). Parseable
  means exactly one ``<answer>`` and one ``</answer>`` tag, written exactly so, in that order, with no
  other SIF tag (``think``/``area``/``text``) inside and non-blank content. Two answer blocks are
  ambiguous, a truncated block has no answer, and a tag variant such as ``<Answer>`` is not the format.
  Only the answer block is judged here; the validity of the whole trace is :func:`sifthinker.method.trace.validate`'s.
* :func:`parse_option`: the option letter an answer names: ``(B)``, ``B``, ``B.``, ``B)``, ``(B).`` (any case),
  exactly one choice's text (case, surrounding space and one final full stop ignored), or a marked letter
  followed by that same choice's text (``(B) red``, ``B. red``). Anything else, including a bare
  ``A red`` (article or option?) and two letters, is None.
* :func:`contains_word`: case-insensitive containment on word boundaries ("no" is not in "not", "3" is
  not in "13" nor in "3.5").

:func:`original_answer` reproduces how the original SIFThinker scripts read the answer (the first
``<answer>...</answer>`` match, stripped, possibly empty), for ``original`` scoring.

:func:`summarize` turns scoring units into a :class:`BenchmarkScore` with the same flat keys and Wilson
intervals for every adapter. :func:`read_parquet` and :func:`write_image` serve the adapters whose
published files are parquet with embedded images (CV-Bench, SAT).
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring, wilson

__all__ = ["MC_INSTRUCTION", "Unit", "contains_word", "format_options", "lettered", "mc_prompt"]
__all__ += ["original_answer", "parse_answer", "parse_option", "read_parquet", "require_responses", "split_lettered"]
__all__ += ["image_blob", "iter_parquet", "summarize", "write_image"]

# Asks for the letter because that is what strict parsing reads most reliably; not "directly", since the
# SIF instruction appended after it asks for the thinking first.
MC_INSTRUCTION = "Answer with the option's letter from the given choices."

_ANSWER_TAG_RE = re.compile(r"<\s*(/?)\s*answer\s*>", re.IGNORECASE)
_OTHER_TAG_RE = re.compile(r"<\s*/?\s*(?:think|area|text)\s*>", re.IGNORECASE)
_ORIGINAL_ANSWER_RE = re.compile(r"<answer>\n?(.*?)\n?</answer>", re.DOTALL)
_LETTER_RE = re.compile(r"\(([A-Za-z])\)\.?|([A-Za-z])[.)]?")
_LETTER_TEXT_RE = re.compile(r"(?:\(([A-Za-z])\)|([A-Za-z])[.)])\s*(\S.*)", re.DOTALL)
_OPTION_MARK_RE = re.compile(r"\(([A-Z])\)")


def parse_answer(response: object) -> str | None:
    """The stripped content of the single well-formed ``<answer>`` block, or None (see module doc)."""
    if not isinstance(response, str):
        return None
    tags = list(_ANSWER_TAG_RE.finditer(response))
    if len(tags) != 2 or tags[0].group(0) != "<answer>" or tags[1].group(0) != "</answer>":
        return None
    content = response[tags[0].end() : tags[1].start()]
    if _OTHER_TAG_RE.search(content):
        return None
    return content.strip() or None


def original_answer(response: object) -> str | None:
    """The answer as the original scripts read it: first ``<answer>...</answer>`` (lazy, any text around,
    nested tags allowed), stripped; ``""`` for an empty block; None without one."""
    if not isinstance(response, str):
        return None
    m = _ORIGINAL_ANSWER_RE.search(response)
    return m.group(1).strip() if m else None


def _norm_text(s: str) -> str:
    # Case, runs of spaces and one final full stop are presentation, not a different answer.
    return " ".join(s.split()).casefold().removesuffix(".").strip()


def parse_option(answer: str | None, options: Mapping[str, str] | None) -> str | None:
    """The option letter ``answer`` names, strictly (see module doc); None when it names none or several."""
    if not answer or not options:
        return None
    text = answer.strip()
    m = _LETTER_RE.fullmatch(text)
    if m and (letter := (m.group(1) or m.group(2)).upper()) in options:
        return letter
    m = _LETTER_TEXT_RE.fullmatch(text)
    if m and (letter := (m.group(1) or m.group(2)).upper()) in options:
        # "(B) red" counts only when red is B's text; a letter and a text that disagree fall through to
        # the exact-text rule below, which they fail (unless the whole answer is some option's text).
        if _norm_text(options[letter]) == _norm_text(m.group(3)):
            return letter
    matches = [k for k, v in options.items() if _norm_text(v) == _norm_text(text)]
    return matches[0] if len(matches) == 1 else None


def contains_word(text: str | None, word: str | None) -> bool:
    """True when ``word`` occurs in ``text`` as a whole word, ignoring case (spaces inside ``word`` match
    any whitespace). A number is not matched inside a longer number ("3" in "13", "3.5", "1,3")."""
    if not text or not word or not word.strip():
        return False
    body = r"\s+".join(re.escape(part) for part in word.split())
    pattern = rf"(?<!\w)(?<!\d[.,]){body}(?!\w)(?![.,]\d)"
    return re.search(pattern, text, re.IGNORECASE) is not None


def lettered(choices: Sequence[str]) -> dict[str, str]:
    """``{"A": choices[0], "B": choices[1], ...}``."""
    if len(choices) > 26:
        raise ValueError(f"{len(choices)} choices: at most 26 can be lettered")
    return {chr(ord("A") + i): str(c) for i, c in enumerate(choices)}


def format_options(options: Mapping[str, str]) -> str:
    """One ``(A) text`` line per option, in letter order."""
    return "\n".join(f"({k}) {v}" for k, v in sorted(options.items()))


def mc_prompt(question: str, options: Mapping[str, str]) -> str:
    """The multiple-choice question as every QA adapter shows it: stem, lettered options, instruction."""
    return f"{question.strip()}\n{format_options(options)}\n{MC_INSTRUCTION}"


def split_lettered(text: str) -> tuple[str, dict[str, str]]:
    """Split a question with inline lettered options ("stem\\n(A) red\\n(B) blue\\nAnswer with ...") into
    the stem and ``{"A": "red", "B": "blue"}``. Markers must run A, B, C, ... from the first; the last
    option ends at its line's end, so an instruction line after the options is dropped."""
    marks: list[re.Match[str]] = []
    for m in _OPTION_MARK_RE.finditer(text):
        if m.group(1) == chr(ord("A") + len(marks)):
            marks.append(m)
    if len(marks) < 2:
        raise ValueError(f"no lettered options (A), (B), ... in {text[:80]!r}")
    options = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end() : end]
        if i + 1 == len(marks):
            body = body.split("\n", 1)[0]
        options[m.group(1)] = " ".join(body.split())
    if not all(options.values()):
        raise ValueError(f"an empty option in {text[:80]!r}")
    return text[: marks[0].start()].strip(), options


def require_responses(items: Sequence[Item], responses: Mapping[str, str], skip: Iterable[str] = ()) -> None:
    """Raise ValueError when an item (other than ``skip``) has no response: a silently missing response
    would either shrink a denominator or, in original scoring, count as a missing answer."""
    skipped = set(skip)
    missing = [i.id for i in items if i.id not in responses and i.id not in skipped]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"no response for {len(missing)} item(s): {shown}")


@dataclass(frozen=True)
class Unit:
    """One scored unit (an item, or a SpatialBench pair scored together) and the accuracy keys it counts
    toward (``"overall"``, ``"category/<name>"``, ...). ``correct`` None: skipped, in no denominator."""

    correct: bool | None
    keys: tuple[str, ...]


def summarize(
    benchmark: str,
    scoring: Scoring,
    results: Sequence[ItemResult],
    units: Iterable[Unit],
    *,
    composite: Mapping[str, float] | None = None,
    skipped: int | None = None,
    notes: Iterable[str] = (),
) -> BenchmarkScore:
    """The benchmark's score. Each key of ``units`` becomes an accuracy over its non-skipped units with a
    Wilson 95% interval (keys with no scored unit are left out). ``composite`` adds values that are not
    one proportion (means of accuracies): they get no interval. ``n`` is the number of items,
    ``format_failures`` those without a parseable ``<answer>``, ``skipped`` defaults to the items with
    ``correct`` None. ``overall`` is always present (0.0, with a note, when nothing was scored)."""
    counts: dict[str, list[int]] = {}
    for u in units:
        for key in u.keys:
            c = counts.setdefault(key, [0, 0])
            if u.correct is not None:
                c[0] += int(u.correct)
                c[1] += 1
    accuracy = {k: (s / n) for k, (s, n) in counts.items() if n}
    intervals = {k: wilson(s, n) for k, (s, n) in counts.items() if n}
    for key, value in (composite or {}).items():
        accuracy[key] = value
        intervals.pop(key, None)
    notes = list(notes)
    if "overall" not in accuracy:
        accuracy["overall"] = 0.0
        notes.append("no item was scored: overall set to 0")
    metrics: dict[str, float] = {
        "overall": accuracy.pop("overall"),
        "n": float(len(results)),
        "format_failures": float(sum(r.format_failure for r in results)),
        "skipped": float(skipped if skipped is not None else sum(r.correct is None for r in results)),
    }
    metrics.update(dict(sorted(accuracy.items())))
    return BenchmarkScore(benchmark=benchmark, scoring=Scoring(scoring), metrics=metrics, items=list(results),
                          intervals=intervals, notes=notes)


# ---- published files ------------------------------------------------------------------------------
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def iter_parquet(path: Path, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The rows of a parquet file (only those of ``columns`` it has), read in batches so that a few rows
    or a pass over the images never hold a multi-gigabyte file in memory."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # not a core dependency; the train extra's datasets pulls it in
        raise RuntimeError(f"reading {Path(path).name} needs pyarrow: pip install pyarrow") from e
    pf = pq.ParquetFile(path)
    cols = [c for c in columns if c in set(pf.schema_arrow.names)]
    for batch in pf.iter_batches(batch_size=64, columns=cols):
        yield from batch.to_pylist()


def read_parquet(path: Path, columns: Sequence[str], limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` (all by default) rows of :func:`iter_parquet`."""
    return list(itertools.islice(iter_parquet(path, columns), limit))


def image_blob(value: Any) -> bytes | None:
    """The bytes of a parquet image cell: raw bytes, or the Hugging Face ``{"bytes", "path"}`` struct."""
    blob = value.get("bytes") if isinstance(value, dict) else value
    return bytes(blob) if blob else None


def write_image(dest: Path, blob: bytes) -> tuple[int, int]:
    """Write image bytes to ``dest`` atomically and return the image's (width, height): as stored when
    their format matches the extension (or the extension is not .png/.jpg/.jpeg), else re-encoded to it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    want = _FORMATS.get(dest.suffix.lower())
    with Image.open(io.BytesIO(blob)) as im:
        size = im.size
        if want is None or im.format == want:
            data = blob
        else:
            ok_modes = ("RGB", "RGBA", "L", "LA", "P") if want == "PNG" else ("RGB", "L")
            out = io.BytesIO()
            (im if im.mode in ok_modes else im.convert("RGB")).save(out, format=want)
            data = out.getvalue()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return size
