"""Generators for evaluation: the model itself (HF transformers, or vLLM on a GPU) and a named fake.

* :class:`ModelGenerator`: a model folder, greedy decoding, ``cfg.eval.max_new_tokens``. Backend
  ``auto`` picks vLLM when the ``vllm`` package is importable and a CUDA GPU is present, else HF
  ``generate`` (:func:`sifthinker.model.inference.generate`, batched with left padding). The vLLM path
  builds the same chat-template prompt and passes the same images; it is not exercised by the test
  suite (no GPU there), so ``backend="hf"`` is the reference.
* :class:`FakeOracleGenerator`: a FAKE for tests and smoke runs that replays each SIF-Bench item's
  reference trace from its record (``records.json`` in the data folder).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.evaluation.inputs import EvalRequest, ItemError, Outcome

__all__ = ["FakeOracleGenerator", "ModelGenerator", "folder_signature", "vllm_available"]

log = logging.getLogger(__name__)


def folder_signature(path: Path) -> str:
    """A cheap identity of a model folder: its path and each top-level file's name, size and mtime (a
    model saved again into the same folder gets a new signature; hashing 15 GB of weights would not be cheap)."""
    p = Path(path).resolve()
    if not p.is_dir():
        raise ValueError(f"model folder {p} does not exist")
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())
    return json.dumps([str(p), files])


def vllm_available() -> bool:
    """vLLM is installed and a CUDA GPU is present."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


class ModelGenerator:
    """The real generator: loads ``model_dir`` once and decodes greedily (module docstring)."""

    name = "model"

    def __init__(self, cfg: RunConfig, model_dir: str | Path, backend: str = "auto"):
        if backend not in ("auto", "hf", "vllm"):
            raise ValueError(f"backend must be auto, hf or vllm, got {backend!r}")
        self.cfg = cfg
        self.model_dir = Path(model_dir)
        self.backend = ("vllm" if vllm_available() else "hf") if backend == "auto" else backend
        self.batch_size = max(1, cfg.eval.batch_size)
        self.max_images: int | None = None  # Qwen2.5-VL takes any number of images per prompt
        pixels = (cfg.model.min_pixels, cfg.model.max_pixels)  # the processor's resize changes what the model sees
        self.fingerprint = f"model:{folder_signature(self.model_dir)}:{pixels}:{cfg.model.torch_dtype}"
        self._loaded: Any = None

    def _load(self) -> Any:
        if self._loaded is None:
            t0 = time.monotonic()
            if self.backend == "vllm":
                self._loaded = _load_vllm(self.cfg, self.model_dir)
            else:
                from sifthinker.model import load_model

                self._loaded = load_model(self.model_dir, self.cfg)
            log.info("loaded %s (%s) in %.1fs", self.model_dir, self.backend, time.monotonic() - t0)
        return self._loaded

    def __call__(self, requests: Sequence[EvalRequest]) -> list[Outcome]:
        gen_requests = [r.gen_request() for r in requests]
        max_new = self.cfg.eval.max_new_tokens
        if self.backend == "vllm":
            return _generate_vllm(self._load(), gen_requests, max_new)
        from sifthinker.model.inference import generate

        model, processor = self._load()
        return list(generate(model, processor, gen_requests, max_new_tokens=max_new, temperature=0.0,
                             batch_size=self.batch_size))


def _load_vllm(cfg: RunConfig, model_dir: Path) -> tuple[Any, Any]:
    """(vllm.LLM, processor). The pixel budget is the recipe's, as in the HF path."""
    from transformers import AutoProcessor
    from vllm import LLM

    llm = LLM(model=str(model_dir), limit_mm_per_prompt={"image": 8}, seed=0,
              mm_processor_kwargs={"min_pixels": cfg.model.min_pixels, "max_pixels": cfg.model.max_pixels})
    return llm, AutoProcessor.from_pretrained(model_dir)


def _generate_vllm(loaded: tuple[Any, Any], requests: Sequence[Any], max_new_tokens: int) -> list[Outcome]:
    from vllm import SamplingParams

    from sifthinker.method.prompts import chat_messages

    llm, processor = loaded
    prompts = [{"prompt": processor.apply_chat_template(chat_messages(r.question, n_images=1 + len(r.more_images)),
                                                        tokenize=False, add_generation_prompt=True),
                "multi_modal_data": {"image": [im.convert("RGB") for im in r.images]}} for r in requests]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
    return [o.outputs[0].text.strip() for o in outs]


def assistant_text(record: dict) -> str:
    """The reference trace of a SIF record: its last assistant message."""
    for m in reversed(record.get("messages") or []):
        if m.get("role") in ("assistant", "gpt"):
            c = m.get("content")
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


class FakeOracleGenerator:
    """FAKE generator for tests and smoke runs: replays each item's reference trace from its record.

    It never looks at a model, so its metrics say nothing about a model; it checks the plumbing. The
    reference is the last assistant message of the record with the item's id in ``records.json`` of
    the data folder (SIF-Bench items; other benchmarks have no reference trace). ``corrupt`` damages
    every ``every``-th item (by position in the benchmark run) in one of these ways: ``"no_answer"``
    (drops the <answer> block), ``"bad_format"`` (drops ``</think>``), ``"wrong_answer"`` (answer
    replaced by ``"no idea"``), ``"miss_boxes"`` (last area moved off the GT to the opposite image
    corner, stated depths kept).
    """

    name = "fake-oracle"
    MODES = ("no_answer", "bad_format", "wrong_answer", "miss_boxes")
    max_images = None

    def __init__(self, corrupt: str | None = None, every: int = 1):
        if corrupt is not None and corrupt not in self.MODES:
            raise ValueError(f"corrupt must be one of {self.MODES} or None, got {corrupt!r}")
        if every < 1:
            raise ValueError("every must be >= 1")
        self.corrupt, self.every = corrupt, every
        self.fingerprint = f"fake-oracle:{corrupt}:{every}"
        self._references: dict[Path, dict[str, str]] = {}

    def _reference(self, req: EvalRequest) -> str | None:
        if req.root not in self._references:
            path = req.root / "records.json"
            records = json.loads(path.read_text()) if path.is_file() else []
            self._references[req.root] = {str(r.get("id")): assistant_text(r) for r in records}
        return self._references[req.root].get(req.item.id)

    def _damage(self, text: str) -> str:
        if self.corrupt == "no_answer":
            return re.sub(r"\s*<answer>.*?</answer>", "", text, flags=re.DOTALL)
        if self.corrupt == "bad_format":
            return text.replace("</think>", "", 1)
        if self.corrupt == "wrong_answer":
            return re.sub(r"<answer>.*?</answer>", "<answer>no idea</answer>", text, flags=re.DOTALL)
        # miss_boxes: replace the last area by a small box in the corner farthest from the GT boxes
        starts = [m.start() for m in re.finditer(r"<area>", text)]
        if not starts:
            return text
        end = text.index("</area>", starts[-1])
        try:
            first = json.loads(text[starts[-1] + len("<area>") : end])[0]
            depth, (x1, y1, x2, y2) = first["depth"], first["bbox_2d"]
        except (ValueError, KeyError, IndexError, TypeError):
            return text
        nx = 0.0 if (x1 + x2) / 2 > 0.5 else 0.9
        ny = 0.0 if (y1 + y2) / 2 > 0.5 else 0.9
        box = f'[{{"bbox_2d":[{nx},{ny},{nx + 0.1:.1f},{ny + 0.1:.1f}],"depth":{depth}}}]'
        return text[: starts[-1] + len("<area>")] + box + text[end:]

    def __call__(self, requests: Sequence[EvalRequest]) -> list[Outcome]:
        out: list[Outcome] = []
        for req in requests:
            text = self._reference(req)
            if text is None:
                out.append(ItemError(f"fake-oracle: no record {req.item.id!r} in {req.root / 'records.json'}"))
                continue
            if self.corrupt and req.index % self.every == 0:
                text = self._damage(text)
            out.append(text)
        return out
