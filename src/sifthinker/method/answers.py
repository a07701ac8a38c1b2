"""Deterministic verifier for closed-form answers, and the judge interface for free text (spec 3 and 5).

:func:`score_answer` scores a predicted answer against the ground truth in [0, 1] for the closed-form
types ``yes_no``, ``number``, ``option``, ``color`` and ``name``; ``free`` text falls back to a
normalised exact match here and is meant for a :class:`Judge` (:class:`sifthinker.rewards.judge.OpenAIJudge`). The rules are strict on purpose: a
reward that accepts hedged answers ("A or B", "the red cube and the blue sphere") teaches hedging, so
an answer naming two distinct values of its type scores 0; negation is not interpreted.

Fixed defects: E1/E4 (a missing answer, ``None`` or blank, scores 0) and E2 (an option letter counts
only when it is the answer's only option letter, never as a substring of the text).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = ["ANSWER_TYPES", "FakeJudge", "Judge", "JudgeUnavailable", "canonical_answer_type"]
__all__ += ["infer_answer_type", "normalize", "score_answer"]

log = logging.getLogger(__name__)

ANSWER_TYPES = ("yes_no", "number", "option", "color", "name", "free")
_NUMBER_LIST = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
)
_NUMBER_LIST += "sixteen seventeen eighteen nineteen twenty"
_ALIASES = dict(
    pair.split("=")
    for pair in "yesno=yes_no yes/no=yes_no bool=yes_no boolean=yes_no count=number counting=number "
    "int=number numeric=number mc=option choice=option multiple_choice=option colour=color object=name "
    "open=free text=free".split()
)
_NUMBER_WORDS = {w: i for i, w in enumerate(_NUMBER_LIST.split())}
# "the one on the left" uses "one" as a pronoun, not a count.
_PRONOUN_ONE_BEFORE = {"the", "this", "that", "which", "each", "every", "any", "no"}
_POLARITY = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_COLOR_SYNONYMS = {"grey": "gray"}
_COLORS = set("red green blue yellow orange purple pink brown black white gray grey cyan magenta".split())
_COLORS |= set("gold silver beige teal turquoise violet maroon navy olive".split())
_COLOR_MODIFIERS = {"light", "dark", "bright", "pale", "deep"}
_ARTICLES = {"a", "an", "the"}
_PLURALS = (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("zes", "z"))
# Words that signal a second object in a short name answer ("red cube and blue sphere", "X, not Y").
_CONNECTORS = set("and or than not nor but vs versus both neither either instead".split())
_DEFAULT_LETTERS = "ABCDEF"
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")


def normalize(text: str | None) -> str:
    """Lower-case NFKC text reduced to word and number tokens joined by single spaces.

    Punctuation and brackets vanish ("Yes, it is." -> "yes it is"); decimals survive ("3.5") and a
    thousands separator is dropped ("1,000" -> "1000") so that a number stays one token.
    """
    if not text:
        return ""
    t = unicodedata.normalize("NFKC", str(text)).lower()
    return " ".join(_TOKEN_RE.findall(_THOUSANDS_RE.sub("", t)))


def _singular(tok: str) -> str:
    # A crude English singulariser is enough for object names ("cubes" -> "cube", "boxes" -> "box").
    if len(tok) <= 3 or tok[0].isdigit():
        return tok
    for suffix, repl in _PLURALS:
        if tok.endswith(suffix):
            return tok[: -len(suffix)] + repl
    return tok[:-1] if tok.endswith("s") and not tok.endswith(("ss", "us", "is")) else tok


def _name_tokens(text: str) -> list[str]:
    return [_singular(t) for t in normalize(text).split() if t not in _ARTICLES]


def _spans(tokens: Sequence[str], phrase: Sequence[str]) -> list[tuple[int, int]]:
    m = len(phrase)
    return [(i, i + m) for i in range(len(tokens) - m + 1) if m and list(tokens[i : i + m]) == list(phrase)]


def _polarity(text: str) -> str | None:
    toks = normalize(text).split()
    if toks and toks[0] in _POLARITY:
        return _POLARITY[toks[0]]  # a leading "Yes, there is no doubt" is a yes
    found = {_POLARITY[t] for t in toks if t in _POLARITY}
    return found.pop() if len(found) == 1 else None


def _numbers(text: str) -> list[float]:
    toks = normalize(text).split()
    out: list[float] = []
    for i, t in enumerate(toks):
        if t[0].isdigit():
            out.append(float(t))
        elif t in _NUMBER_WORDS and not (t == "one" and i > 0 and toks[i - 1] in _PRONOUN_ONE_BEFORE):
            out.append(float(_NUMBER_WORDS[t]))
    if not out and toks in (["none"], ["no"], ["nothing"]):
        out.append(0.0)  # a bare "none" answers a count; inside a sentence "no" is too ambiguous
    return out


def _number(text: str) -> float | None:
    nums = _numbers(text)
    if not nums:
        return None
    if len(set(nums)) == 1:
        return nums[0]
    # "3 objects, 1 of them red": a leading number is the answer; otherwise several numbers are ambiguous.
    lead = (normalize(text).split() or [""])[0]
    return nums[0] if (lead[:1].isdigit() or lead in _NUMBER_WORDS) else None


def _colors(text: str) -> set[str]:
    return {_COLOR_SYNONYMS.get(t, t) for t in normalize(text).split() if t in _COLORS}


def _is_color_answer(text: str) -> bool:
    toks = normalize(text).split()
    only_colours = all(t in _COLORS or t in _COLOR_MODIFIERS or t == "and" for t in toks)
    return bool(toks) and only_colours and bool(_colors(text))


# A ground-truth option: a letter alone ("B", "(b)", "B.") or a marked letter before a text ("B. red cube",
# "(B) red cube"); "A red cube" (no mark) is an article, not an option.
_GT_OPTION_RE = re.compile(
    r"\s*(?:\(?([A-Za-z])\)?[.):]?|\(([A-Z])\)\s*(\S.*)|([A-Z])[.):]\s*(\S.*))\s*", re.S
)
_LETTER_RE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z])(?![A-Za-z0-9])")
_OPTION_WORD_RE = re.compile(r"\b(option|choice)\s*$", re.IGNORECASE)


def _gt_option(gt: str) -> tuple[str | None, str]:
    """Split a ground-truth option ("B", "(B)", "B. red cube") into its letter and text."""
    m = _GT_OPTION_RE.fullmatch(gt)
    if m is None:
        return None, gt.strip()
    return (m.group(1) or m.group(2) or m.group(4)).upper(), (m.group(3) or m.group(5) or "").strip()


def _option_letters(pred: str, valid: str) -> set[str]:
    """Every option letter the answer names, under the strict rules of :func:`score_answer`."""
    letters: set[str] = set()
    alnum = re.sub(r"[^A-Za-z0-9]", "", pred)
    for m in (m for m in _LETTER_RE.finditer(pred) if m.group(1).upper() in valid):
        ch, before, after = m.group(1), pred[: m.start()], pred[m.end() :]
        if ch.isupper():
            # A capitalised "A" opening a sentence and followed by a lower-case word is the article,
            # unless that word is a connector ("A or B" names two options).
            sentence_start = re.search(r"(^|[.!?:]\s+)[\"'(\[]?$", before) is not None
            nxt = re.match(r"\s+([a-z]+)", after)
            if not (ch == "A" and sentence_start and nxt and nxt.group(1) not in _CONNECTORS):
                letters.add(ch)
        # Lower-case letters are ordinary words ("a"), so they count only in unmistakable forms: the
        # whole answer, "(b)", "option b", or "b." / "b)" opening the answer.
        elif alnum.lower() == ch or before[-1:] + after[:1] == "()" or re.search(_OPTION_WORD_RE, before):
            letters.add(ch.upper())
        elif not before.strip() and re.match(r"[.):]", after):
            letters.add(ch.upper())
    return letters


def _option_by_text(pred: str, options: Mapping[str, str]) -> str | None:
    """The single option whose text the answer names (occurrences inside a longer option ignored)."""
    toks = _name_tokens(pred)
    spans = {k: _spans(toks, _name_tokens(v)) for k, v in options.items()}
    spans = {k: v for k, v in spans.items() if v}

    def covered(k: str, s0: int, e0: int) -> bool:  # inside a longer named option's occurrence
        return any(a <= s0 and e0 <= b and b - a > e0 - s0 for o in spans if o != k for a, b in spans[o])

    named = [k for k, ks in spans.items() if not all(covered(k, s0, e0) for s0, e0 in ks)]
    return named[0] if len(named) == 1 else None


def _score_option(pred: str, gt: str, options: Mapping[str, str] | None) -> float:
    opts = {k.strip().upper(): v for k, v in (options or {}).items()}
    gt_letter, gt_text = _gt_option(gt)
    if gt_letter is not None and gt_text and gt_letter not in opts:
        opts[gt_letter] = gt_text
    if gt_letter is None:
        # The ground truth is an option's text: find its letter, else compare texts as names.
        gt_letter = _option_by_text(gt, opts) if opts else None
        if gt_letter is None:
            return _score_name(pred, gt, list(opts.values()) or None)
    valid = "".join(sorted(set(opts) | set(_DEFAULT_LETTERS) | {gt_letter}))
    letters = _option_letters(pred, valid)
    if len(letters) == 1:
        return float(letters.pop() == gt_letter)
    if letters:
        return 0.0  # "not A but B" names two letters: ambiguous, scored wrong
    return float(bool(opts) and _option_by_text(pred, opts) == gt_letter)


def _score_name(pred: str, gt: str, candidates: Sequence[str] | None) -> float:
    toks, gt_toks = _name_tokens(pred), _name_tokens(gt)
    gt_spans = _spans(toks, gt_toks)
    if not gt_spans or any(t in _CONNECTORS for t in toks) or len(gt_spans) > 1:
        return 0.0
    for cand in candidates or ():
        c_toks = _name_tokens(cand)
        if not c_toks or c_toks == gt_toks:
            continue
        for s0, e0 in _spans(toks, c_toks):
            # Another name counts unless it is only a piece of the ground-truth name ("cube" in "red cube").
            if not any(a <= s0 and e0 <= b for a, b in gt_spans):
                return 0.0
    return 1.0


def canonical_answer_type(answer_type: str) -> str:
    """The canonical name of an answer type or alias ("count" -> "number"); ValueError if unknown."""
    kind = _ALIASES.get(answer_type.strip().lower(), answer_type.strip().lower())
    if kind not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; expected one of {ANSWER_TYPES}")
    return kind


def infer_answer_type(gt: str) -> str:
    """Guess the answer type from the ground truth alone (used when a record has no ``answer_type``)."""
    toks = normalize(gt).split()
    if len(toks) == 1 and (toks[0] in _POLARITY or toks[0][0].isdigit() or toks[0] in _NUMBER_WORDS):
        return "yes_no" if toks[0] in _POLARITY else "number"
    if _GT_OPTION_RE.fullmatch(gt):
        return "option"
    if _is_color_answer(gt):
        return "color"
    return "name" if 0 < len(toks) <= 5 else "free"


def score_answer(
    pred: str | None,
    gt: str,
    answer_type: str | None = None,
    *,
    options: Mapping[str, str] | None = None,
    candidates: Sequence[str] | None = None,
) -> float:
    """Score ``pred`` against ``gt`` in [0, 1] (closed-form answers are 0 or 1).

    ``answer_type`` is one of :data:`ANSWER_TYPES` (or an alias such as ``"count"``); ``None`` infers it
    from ``gt``. Unknown types raise ``ValueError``. Rules, all case-insensitive:

    - ``yes_no``: the leading yes/no/true/false word, else the single polarity the answer contains.
    - ``number``: digits or number words zero..twenty; all numbers named must agree unless the answer
      starts with one ("3 objects" and "there are three" both give 3).
    - ``option``: ``options`` maps letters to texts (optional). The answer names an option by a letter
      ("B", "(B)", "B.", "Option C"; lower-case only in those unmistakable forms) or, with no letter at
      all, by exactly one option text. Two different letters ("not A but B") score 0 (E2). Without
      ``options`` only the ground truth's own text ("B. red cube") can be recognised.
    - ``color``: the set of colour words (grey = gray; modifiers such as "dark" ignored) must be equal.
    - ``name``: ignoring case, punctuation, articles and plural, the answer contains the ground-truth
      name exactly once, no connector word (and/or/than/not/but...), and none of the other
      ``candidates`` except as part of the ground-truth name. "the red cube is closer" matches
      "red cube"; "the red cube, not the blue sphere" does not.
    - ``free``: normalised exact match (articles dropped); use a :class:`Judge` for real free text.
    """
    if pred is None or not str(pred).strip() or gt is None:
        return 0.0  # E1/E4: a missing answer is wrong
    pred, gt = str(pred), str(gt)
    kind = infer_answer_type(gt) if answer_type is None else canonical_answer_type(answer_type)
    if kind == "yes_no":
        g = _polarity(gt)
        return float(g is not None and _polarity(pred) == g)
    if kind == "number":
        g_num, p_num = _number(gt), _number(pred)
        ok = g_num is not None and p_num is not None and abs(p_num - g_num) <= 1e-9 * max(1.0, abs(g_num))
        return float(ok)
    if kind == "option":
        return _score_option(pred, gt, options)
    if kind == "color":
        g_col = _colors(gt)
        return float(bool(g_col) and _colors(pred) == g_col)
    if kind == "name":
        return _score_name(pred, gt, candidates)
    # free: a judge's job; without one only an exact (normalised) match is safe to reward
    return float(_name_tokens(pred) == _name_tokens(gt) and bool(_name_tokens(gt)))


# ---- judges for free-text answers ----------------------------------------------------------------
# The HTTP judge is sifthinker.rewards.judge.OpenAIJudge; here only what the rewards need to know about judges.


class Judge(Protocol):
    """Scores a free-text answer against the ground truth in [0, 1]."""

    def score(self, question: str, pred: str, gt: str) -> float: ...


class JudgeUnavailable(RuntimeError):
    """The judge failed and its policy is ``stop``: the reward lets this end the run (never scored 0)."""


class FakeJudge:
    """A deterministic stand-in judge for tests: returns the verifier's score and records its calls."""

    def __init__(self, answer_type: str | None = "free") -> None:
        self.answer_type = answer_type
        self.calls: list[tuple[str, str | None, str]] = []

    def score(self, question: str, pred: str | None, gt: str) -> float:
        self.calls.append((question, pred, gt))
        return score_answer(pred, gt, self.answer_type)
