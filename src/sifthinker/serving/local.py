"""The model in this process: loaded once, generating through the batcher (the native predictor)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sifthinker.serving.batcher import Batcher, Job
from sifthinker.serving.errors import limit_error
from sifthinker.serving.limits import Limits
from sifthinker.serving.request import Decoded
from sifthinker.serving.service import Prepared

log = logging.getLogger(__name__)


def model_context(model: Any) -> int:
    """The model's context length (tokens), from its text config."""
    for cfg in (getattr(model.config, "text_config", None), model.config):
        n = getattr(cfg, "max_position_embeddings", None)
        if n:
            return int(n)
    return 32768


class LocalBackend:
    kind = "native"

    def __init__(self, model_dir: str | Path, cfg: Any, limits: Limits, metrics: Any = None):
        self.model_dir, self.cfg, self.limits, self.metrics = Path(model_dir), cfg, limits, metrics
        self.model = self.processor = self.batcher = None
        self.context = 0
        self.incoming = lambda: 0  # set by the server: requests being decoded, about to be submitted
        self.ready = False

    def load(self) -> None:
        from sifthinker.model import load_model

        log.info("loading %s", self.model_dir)
        self.model, self.processor = load_model(self.model_dir, self.cfg)
        self.context = model_context(self.model)
        self.batcher = Batcher(self.model, self.processor, self.limits.max_batch_size,
                               self.limits.max_batch_wait_ms / 1000, incoming=lambda: self.incoming(),
                               metrics=self.metrics)
        self.ready = True

    def prepare(self, d: Decoded) -> Prepared:
        """Tokenise the SIF prompt with the images (worker thread); refuse a prompt that cannot fit."""
        from sifthinker.model.inference import GenRequest, build_inputs

        q = d.ask
        req = GenRequest(d.images[0], d.depth_images[0], q.question, tuple(d.images[1:]), tuple(d.depth_images[1:]))
        inputs = build_inputs(self.processor, [req])
        n = int(inputs["input_ids"].shape[1])
        cap = min(self.limits.max_prompt_tokens, self.context - q.max_tokens)
        if n > cap:
            raise limit_error("max_prompt_tokens", f"the prompt is {n} tokens (text and image tokens); at most {cap} "
                              f"fit (the model's context is {self.context} tokens, max_tokens is {q.max_tokens})", 400)
        return Prepared(d, dict(inputs), n)

    def submit(self, p: Prepared, deadline: float, loop: asyncio.AbstractEventLoop, on_start: Any) -> Job:
        q = p.decoded.ask
        job = Job(p.payload, int(p.prompt_tokens or 0), q.max_tokens, q.temperature, deadline, loop,
                  stream=q.stream, on_start=on_start)
        self.batcher.submit(job)
        return job

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
