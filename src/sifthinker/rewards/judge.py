"""The LLM judge for free-form answers, over any OpenAI-compatible endpoint (method spec, section 5).

The answer reward asks the deterministic verifier first (:func:`sifthinker.method.answers.score_answer`); only
``free`` answers reach this judge. It sends the spec's proofreading prompt, reads ``{"score": x}`` from
the reply (:func:`parse_judge_score`), and caches scores by (question, ground truth, answer): 8
rollouts of one prompt often repeat an answer, and later epochs repeat them all.

Failure handling, because an endpoint will be slow or down during a long run: every request has a
timeout, and connection errors, timeouts, 429/5xx replies and replies without a score are retried
``retries`` times with a short backoff; at most ``max_concurrency`` requests are in flight. Then the
recipe's policy applies (``grpo.judge.on_error``): ``zero`` scores the answer 0 and counts it
(:attr:`OpenAIJudge.failures`, logged per step as ``judge/failures``), ``stop`` raises
:class:`~sifthinker.method.answers.JudgeUnavailable`, which ends the run. Failures are never cached.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from sifthinker.method.answers import JudgeUnavailable

__all__ = ["JUDGE_SYSTEM_PROMPT", "JUDGE_USER_PROMPT", "OpenAIJudge", "judge_from_config", "parse_judge_score"]

log = logging.getLogger(__name__)

# The method's prompt (spec 3: "You are responsible for proofreading the answers ... {"score": x}").
JUDGE_SYSTEM_PROMPT = (
    "You are responsible for proofreading the answers, you need to give the score to the model's answer by "
    "referring to the standard answer, based on the given question. The full score is 1 point and the minimum "
    'score is 0 points. Please directly provide the score in JSON format, for example, {"score": 0.8}, without '
    "showing the intermediate process. The evaluation criteria require that the closer the model's answer is "
    "to the standard answer, the higher the score."
)
JUDGE_USER_PROMPT = "Question: {question}\nStandard answer: {gt}\nModel's answer: {pred}"
ON_ERROR = ("zero", "stop")
_JSON_OBJ_RE = re.compile(r"\{[^{}]*\}")
_SCORE_RE = re.compile(r"""["']?score["']?\s*[:=]\s*(-?\d+(?:\.\d+)?)""", re.IGNORECASE)
_RETRYABLE = {408, 409, 425, 429}


def parse_judge_score(reply: str) -> float | None:
    """The ``score`` in a judge reply (JSON object, possibly wrapped in prose or a fence), clipped to [0, 1]."""
    for m in _JSON_OBJ_RE.finditer(reply or ""):
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        score = obj.get("score") if isinstance(obj, dict) else None
        if isinstance(score, int | float) and not isinstance(score, bool):
            return min(1.0, max(0.0, float(score)))
    m2 = _SCORE_RE.search(reply or "")
    return min(1.0, max(0.0, float(m2.group(1)))) if m2 else None


class _NoScore(Exception):
    def __init__(self, why: str, retryable: bool = True) -> None:
        super().__init__(why)
        self.retryable = retryable


class OpenAIJudge:
    """A judge behind ``{base_url}/chat/completions``; see the module docstring for its failure policy."""

    max_tokens = 32  # the reply is a tiny JSON object
    cache_size = 100_000

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 2, max_concurrency: int = 8, on_error: str = "zero", backoff_s: float = 0.5) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s
        self.max_concurrency, self.on_error = max(1, max_concurrency), on_error
        self._cache: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()  # one requests.Session per thread: sessions are not thread-safe
        self.requests = self.cache_hits = self.failures = 0

    # -- one request ------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def _ask(self, question: str, gt: str, pred: str) -> float:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens, "messages": [
            {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {"role": "user", "content": JUDGE_USER_PROMPT.format(question=question, gt=gt, pred=pred)}]}
        with self._lock:
            self.requests += 1
        try:
            resp = self._session().post(self.url, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:  # timeouts and connection errors
            raise _NoScore(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise _NoScore(f"HTTP {resp.status_code}", retryable=resp.status_code >= 500 or resp.status_code
                           in _RETRYABLE)
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _NoScore(f"not a chat completion: {resp.text[:120]!r}") from None
        score = parse_judge_score(content if isinstance(content, str) else "")
        if score is None:
            raise _NoScore(f"reply without a score: {str(content)[:120]!r}")
        return score

    def _score_uncached(self, key: tuple[str, str, str]) -> float:
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                score = self._ask(*key)
            except _NoScore as exc:
                why = str(exc)
                log.warning("judge request failed (attempt %d of %d): %s", attempt + 1, self.retries + 1, why)
                if not exc.retryable:
                    break
                continue
            with self._lock:
                self._cache[key] = score
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return score
        if self.on_error == "stop":
            raise JudgeUnavailable(f"the judge at {self.url} gave no score ({why}); grpo.judge.on_error is 'stop'")
        with self._lock:
            self.failures += 1
        return 0.0

    # -- the Judge interface ---------------------------------------------------------------------------
    def _cached(self, key: tuple[str, str, str]) -> float | None:
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                self.cache_hits += 1
                self._cache.move_to_end(key)
            return value

    def score(self, question: str, pred: str | None, gt: str) -> float:
        """The judge's score of ``pred`` against ``gt`` (0 for no answer, or a failure under ``zero``)."""
        return self.score_batch([(question, pred, gt)])[0]

    def score_batch(self, items: Sequence[tuple[str, str | None, str]]) -> list[float]:
        """Scores of many ``(question, pred, gt)``: duplicates and cached triples cost no request."""
        keys = [None if p is None or not str(p).strip() else (str(q), str(g), str(p)) for q, p, g in items]
        scores: dict[tuple[str, str, str], float] = {}
        missing = []
        for key in dict.fromkeys(k for k in keys if k is not None):
            if (hit := self._cached(key)) is not None:
                scores[key] = hit
            else:
                missing.append(key)
        if missing:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(missing))) as pool:
                scores.update(zip(missing, pool.map(self._score_uncached, missing), strict=True))
        return [0.0 if k is None else scores[k] for k in keys]


def judge_from_config(jc: Any) -> OpenAIJudge | None:
    """The recipe's judge (``grpo.judge``, a :class:`sifthinker.config.run_config.JudgeConfig`), or None without one."""
    if jc is None:
        return None
    key = os.environ.get(jc.api_key_env) if jc.api_key_env else None
    return OpenAIJudge(jc.base_url, jc.model, key, timeout=jc.timeout_s, retries=jc.retries,
                       max_concurrency=jc.max_concurrency, on_error=jc.on_error)
