"""Dynamic batching: concurrent requests generated together by one worker thread.

Requests become :class:`Job` s (already tokenised, with their pixel values) and wait in one queue. The
worker takes the first waiting job and every waiting job with the same temperature, up to
``max_batch_size``; when fewer are there and more are on their way (being decoded), or the last batch,
just ended, was larger (its clients are sending their next requests), it waits up to
``max_batch_wait_ms`` for them. The batch is left-padded (:func:`collate`, the same layout the processor
gives a batch) and generated in one ``model.generate`` call, with the decoding settings of
:func:`sifthinker.model.inference.generate`, so each row's text equals the unbatched greedy generation
(``tests/serving/test_serving_batching.py`` checks it).

One stopping criterion (:class:`_Rows`) watches every row after each token: it records the row's tokens
(streamed requests get their text deltas from it), and ends a row at its own ``max_tokens``, at a stop
token, when its request was cancelled (client gone, server shutting down) or when its deadline passed.
A batch therefore never runs longer than its longest live row.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sifthinker.serving.errors import RequestError, limit_error

log = logging.getLogger(__name__)


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    batch_size: int = 1
    queue_s: float = 0.0


@dataclass(eq=False)
class Job:
    inputs: dict[str, Any]  # one row of processor output
    prompt_tokens: int
    max_new_tokens: int
    temperature: float
    deadline: float  # time.monotonic() after which the request is abandoned
    loop: asyncio.AbstractEventLoop
    stream: bool = False
    on_start: Any = None  # called (worker thread) when the job's batch starts
    future: asyncio.Future = field(init=False)
    deltas: asyncio.Queue | None = field(init=False)
    tokens: list[int] = field(default_factory=list)
    stop_reason: str | None = None  # stop | length | cancelled | timeout
    cancelled: str | None = None  # why, when the request no longer wants the answer
    queued_at: float = field(default_factory=time.monotonic)
    queue_s: float = 0.0
    _sent: str = ""

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()
        self.deltas = asyncio.Queue() if self.stream else None

    def cancel(self, why: str = "cancelled") -> None:
        """Stop generating for this request at the next token (thread-safe: one attribute write)."""
        self.cancelled = self.cancelled or why


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """One-row processor outputs -> a left-padded batch: per-token tensors ``[1, L]`` are padded on the
    left (``input_ids`` with ``pad_id``, masks with 0), per-image tensors are concatenated in row order."""
    import torch

    width = max(r["input_ids"].shape[1] for r in rows)
    out: dict[str, Any] = {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        if all(v.dim() == 2 and v.shape[0] == 1 and v.shape[1] == r["input_ids"].shape[1]
               for v, r in zip(vals, rows, strict=True)):
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.cat([torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill) for v in vals])
        else:
            out[key] = torch.cat(vals)
    return out


class _Rows:
    """The batch's stopping criterion (see the module docstring); called once per generated token."""

    def __init__(self, batcher: Batcher, jobs: list[Job]):
        self.b, self.jobs = batcher, jobs

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1].tolist()
        now = time.monotonic()
        done = []
        for j, tok in zip(self.jobs, last, strict=True):
            if j.stop_reason is None:
                j.tokens.append(tok)
                if tok in self.b.stop_ids:
                    j.stop_reason = "stop"
                elif len(j.tokens) >= j.max_new_tokens:
                    j.stop_reason = "length"
                elif j.cancelled:
                    j.stop_reason = "cancelled"
                elif now > j.deadline:
                    j.stop_reason = "timeout"
                if j.stream:
                    self.b.push_delta(j)
            done.append(j.stop_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Batcher:
    """The generation worker over one loaded model (thread-safe ``submit`` / ``close``)."""

    def __init__(self, model: Any, processor: Any, max_batch_size: int = 8, max_wait_s: float = 0.01,
                 incoming: Any = None, metrics: Any = None):
        from sifthinker.model.inference import suppressed_ids

        self.model, self.processor = model, processor
        self.tokenizer = processor.tokenizer
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        # requests admitted and not generating yet, this batch's included: those beyond it are being decoded
        self.incoming = incoming or (lambda: 0)
        self.metrics = metrics
        eos = model.generation_config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        self.stop_ids = set(ids)
        self.eos_ids = ids
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else ids[0]
        self.suppress = suppressed_ids(model, processor)
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._last = (0, 0.0)  # (size, end time) of the last batch
        self._thread = threading.Thread(target=self._work, name="sifthinker-batcher", daemon=True)
        self._thread.start()

    # -- queue ------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise RequestError("the server is shutting down", 503, code="shutting_down")
            self._queue.append(job)
            self._cond.notify()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Refuse new jobs and cancel every waiting and running one (shutdown must not wait on them)."""
        with self._cond:
            self._closed = True
            for j in [*self._queue, *self._running]:
                j.cancel("shutdown")
            self._cond.notify_all()

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            now = time.monotonic()
            until = now + self.max_wait_s
            # The clients of a batch that just ended send their next requests within milliseconds, before
            # they count as incoming. Jobs that waited through that batch are expected together with
            # them (up to max_wait): otherwise, at steady concurrency, two half-size batches alternate.
            size, ended = self._last
            expect = 1
            if now - ended < 1.0:
                expect = min(self.max_batch_size, size + sum(j.queued_at < ended for j in self._queue))
            first = self._queue.popleft()
            batch = [first]
            while len(batch) < self.max_batch_size:
                for j in [j for j in self._queue if j.temperature == first.temperature]:
                    if len(batch) < self.max_batch_size:
                        self._queue.remove(j)
                        batch.append(j)
                left = until - time.monotonic()
                if (len(batch) >= self.max_batch_size or left <= 0 or self._closed
                        or (self.incoming() - len(batch) <= 0 and len(batch) >= expect)):
                    break
                self._cond.wait(left)
            self._running = batch
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for j in batch:
                if j.on_start:
                    j.on_start()
                if j.cancelled or time.monotonic() > j.deadline:
                    j.stop_reason = j.cancelled and "cancelled" or "timeout"
                    self._finish(j, len(batch))
                else:
                    live.append(j)
            try:
                if live:
                    self._generate(live)
            except Exception as e:  # a bug, not a client error: answered as such, and the worker goes on
                log.exception("generation failed for a batch of %d", len(live))
                for j in live:
                    self._deliver(j, RequestError(f"generation failed ({type(e).__name__})", 500))
            else:
                ended = time.monotonic()  # before the replies go out: a job queued later is a returning client
                for j in live:
                    self._finish(j, len(live))
                with self._cond:
                    self._last = (len(batch), ended)
            with self._cond:
                self._running = []

    # -- generation -------------------------------------------------------------------------------------
    def _generate(self, jobs: list[Job]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        if self.metrics:
            self.metrics.batch_size.observe(len(jobs))
        now = time.monotonic()
        for j in jobs:
            j.queue_s = now - j.queued_at
        t = jobs[0].temperature
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": float(t), "top_k": 0, "top_p": 1.0} if t > 0
            else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        )
        inputs = collate([j.inputs for j in jobs], self.pad_id)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.inference_mode():
            self.model.generate(**inputs, max_new_tokens=max(j.max_new_tokens for j in jobs),
                                pad_token_id=self.pad_id, eos_token_id=self.eos_ids, suppress_tokens=self.suppress,
                                stopping_criteria=StoppingCriteriaList([_Rows(self, jobs)]), **sampling)

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push_delta(self, j: Job) -> None:
        """Send a streamed job the text it has not seen yet (whitespace at either end held back, as the
        final text is stripped; an incomplete UTF-8 sequence held back too)."""
        text = self._text(j.tokens).strip()
        if text.endswith("\ufffd") and j.stop_reason is None:
            return
        if text.startswith(j._sent) and len(text) > len(j._sent):
            delta, j._sent = text[len(j._sent):], text
            self._call(j, j.deltas.put_nowait, delta)

    def _finish(self, j: Job, batch_size: int) -> None:
        if self.metrics:
            self.metrics.tokens.inc(len(j.tokens))
        if j.stop_reason == "timeout":
            self._deliver(j, limit_error("request_timeout_s", "the request took longer than the server's request "
                                         "timeout", 408))
        elif j.stop_reason == "cancelled":
            self._deliver(j, RequestError("the server is shutting down" if j.cancelled == "shutdown"
                                          else "the request was cancelled", 503 if j.cancelled == "shutdown"
                                          else 499, code=j.cancelled))
        else:
            text = self._text(j.tokens).strip()
            if j.stream:
                self.push_delta(j)
            self._deliver(j, Result(text, j.prompt_tokens, len(j.tokens), j.stop_reason or "length", batch_size,
                                    j.queue_s))

    def _deliver(self, j: Job, outcome: Result | Exception) -> None:
        def resolve() -> None:
            if j.future.done():
                return
            if isinstance(outcome, Exception):
                j.future.set_exception(outcome)
            else:
                j.future.set_result(outcome)
            if j.deltas is not None:
                j.deltas.put_nowait(None)  # end of stream

        self._call(j, resolve)

    @staticmethod
    def _call(j: Job, fn: Any, *args: Any) -> None:
        try:
            j.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is waiting
            pass
