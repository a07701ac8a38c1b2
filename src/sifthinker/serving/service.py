"""The request life cycle every route shares, whatever generates the text.

A *backend* generates: :class:`~sifthinker.serving.local.LocalBackend` (the model in this process, through
the batcher) or :class:`~sifthinker.serving.transformer.RemoteBackend` (an OpenAI-compatible predictor,
vLLM on a GPU cluster). Both offer ``load()``, ``prepare(decoded)`` (worker thread: tokenise / encode,
may refuse with a 4xx), ``submit(prepared, deadline, loop, on_start)`` returning a handle (``future``,
``deltas`` for streams, ``cancel(why)``) and ``close()``.

:class:`Service` admits a request (429 past ``max_queue`` waiting requests), decodes it off the event
loop, submits it, and waits for it with its deadline while watching for the client to go away; an
abandoned or timed-out request is cancelled, which stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Any

from sifthinker.serving import request as rq
from sifthinker.serving.errors import RequestError, limit_error
from sifthinker.serving.limits import Limits
from sifthinker.serving.sif import sif_object

_DISCONNECT_POLL_S = 0.25


@dataclass
class Prepared:
    decoded: rq.Decoded
    payload: Any  # what the backend submits (processor outputs, or a chat-completions body)
    prompt_tokens: int | None = None


class Service:
    def __init__(self, backend: Any, name: str, aliases: tuple[str, ...], limits: Limits,
                 depth_provider: Any = None, metrics: Any = None):
        self.backend, self.name, self.limits = backend, name, limits
        self.names = tuple(dict.fromkeys([name, *(a for a in aliases if a)]))
        self.depth_provider, self.metrics = depth_provider, metrics
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="sif-decode")
        self.waiting = 0  # admitted, not yet generating
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return bool(getattr(self.backend, "ready", False))

    async def unready_reason(self) -> str | None:
        """Why the server is not ready now (readiness routes), or None: the model not loaded or closing, or
        (a transformer) its predictor not answering."""
        if not self.ready:
            return "the model is not ready"
        probe = getattr(self.backend, "probe", None)
        return await probe() if probe else None

    def close(self) -> None:
        """Cancel everything in flight and refuse more (called when the server is asked to stop)."""
        self.backend.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.names:
            raise RequestError(f"model {model[:80]!r} is not served here; available: {', '.join(self.names)}", 404,
                               param="model", code="model_not_found")

    # -- admission ----------------------------------------------------------------------------------
    def _enter(self) -> None:
        with self._lock:
            if self.waiting >= self.limits.max_queue:
                raise limit_error("max_queue", f"the server has {self.waiting} requests waiting; retry later", 429)
            self.waiting += 1
            self._gauge()

    def _leave(self) -> None:
        with self._lock:
            self.waiting -= 1
            self._gauge()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue.set(self.waiting)

    def _prepare(self, ask: rq.Ask) -> Prepared:
        forward = bool(getattr(self.backend, "forwards_images", False))
        return self.backend.prepare(rq.decode(ask, self.limits, self._depth, forward))

    def _depth(self, image: Any) -> Any:
        if self.depth_provider is None:
            raise RequestError("this server has no depth provider: send each image's depth image too")
        try:
            return self.depth_provider(image)
        except Exception as e:  # the provider's weights missing or broken: the server's problem, said so
            raise RequestError(f"the depth provider failed ({type(e).__name__}: {str(e)[:200]}); send the depth "
                               "image with the request", 503, code="depth_provider") from e

    async def start(self, ask: rq.Ask, info: dict) -> tuple[Prepared, Any, float]:
        """Admit, decode and submit ``ask``; returns (prepared, handle, deadline)."""
        if not self.ready:
            raise RequestError("the model is not ready", 503, code="not_ready")
        deadline = time.monotonic() + self.limits.request_timeout_s
        self._enter()
        pending = [True]

        def started() -> None:
            if pending and pending.pop():
                self._leave()

        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(self.executor, self._prepare, ask)
            if time.monotonic() > deadline:
                raise limit_error("request_timeout_s", "the request took longer than the server's request timeout",
                                  408)
            handle = self.backend.submit(prepared, deadline, loop, started)
        except BaseException:
            started()
            raise
        info.update(images=len(prepared.decoded.images) + len(prepared.decoded.depth_images),
                    prompt_tokens=prepared.prompt_tokens, max_tokens=ask.max_tokens, stream=ask.stream)
        return prepared, handle, deadline

    async def complete(self, ask: rq.Ask, request: Any, info: dict) -> tuple[Prepared, Any]:
        """Generate ``ask`` to the end; returns (prepared, result)."""
        prepared, handle, deadline = await self.start(ask, info)
        watcher = asyncio.create_task(self._watch(request, handle))
        try:
            result = await asyncio.wait_for(asyncio.shield(handle.future), max(0.0, deadline - time.monotonic()) + 2)
        except TimeoutError as e:
            handle.cancel("timeout")
            raise limit_error("request_timeout_s", "the request took longer than the server's request timeout",
                              408) from e
        except asyncio.CancelledError:
            handle.cancel("abandoned")
            raise
        finally:
            watcher.cancel()
        self.record(info, result)
        return prepared, result

    @staticmethod
    def record(info: dict, result: Any) -> None:
        info.update(completion_tokens=result.completion_tokens, finish_reason=result.finish_reason,
                    batch_size=result.batch_size, queue_ms=round(result.queue_s * 1000, 1))

    @staticmethod
    async def _watch(request: Any, handle: Any) -> None:
        """Cancel the generation when the client disconnects (nobody will read the answer)."""
        while True:
            await asyncio.sleep(_DISCONNECT_POLL_S)
            if await request.is_disconnected():
                handle.cancel("client disconnected")
                return

    async def sif(self, text: str, prepared: Prepared, draw: bool) -> dict:
        d = prepared.decoded
        args = (text, d.images[0], d.depth_images[0] if d.depth_images else None, draw)
        if not draw:
            return sif_object(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, sif_object, *args)
