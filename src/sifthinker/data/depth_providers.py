"""Depth providers: the colour depth image a model sees, made for an RGB image that comes without one.

``make_depth_provider(cfg.depth)`` returns a callable ``provider(image) -> colour depth image`` (the
``Spectral_r`` rendering of :func:`sifthinker.method.depth.colorize`, near = red) with a ``fingerprint``: what
the images depend on, so prediction caches can tell providers apart.

* ``depth-anything-v2``: the paper's depth model (:class:`sifthinker.method.depth.DepthAnythingV2`), weights
  from a local folder or a hub id (``depth.model``), on ``depth.device``. Each distinct image is
  estimated once: results are kept in memory and, given ``cache_dir``, as PNG files keyed by the image's
  pixels, so a rerun or a second benchmark over the same photos does not run the model again.
* :class:`DepthAnythingMaps` gives the data build float maps (not colour images) from the same model, in
  batches (``sifthinker data build --depth dav2``).
* ``fake-gradient``: a NAMED FAKE, not a depth model: a vertical gradient (top of the image far, bottom
  near) whatever the image shows. It exists so tests and CPU smoke runs can exercise the whole path
  without depth weights; its images say nothing about the scene.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from sifthinker.config.data_config import DepthConfig
from sifthinker.method.depth import colorize

__all__ = ["DepthAnythingMaps", "DepthAnythingProvider", "DepthProvider", "FakeGradientDepth",
           "make_depth_provider"]


class DepthProvider(Protocol):
    name: str
    fingerprint: str

    def __call__(self, image: Image.Image) -> Image.Image: ...


class FakeGradientDepth:
    """FAKE depth provider (see the module docstring): relative depth ``1 - y / (H - 1)``, coloured."""

    name = "fake-gradient"
    fingerprint = "fake-gradient:v1"

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        column = 1.0 - np.linspace(0.0, 1.0, max(h, 1), dtype=np.float32)  # top far (1), bottom near (0)
        return colorize(np.repeat(column[:, None], max(w, 1), axis=1))


def _image_key(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    h = hashlib.sha256(f"{rgb.size}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()[:32]


def _pipeline_device(device: str) -> int | str:
    """``depth.device`` as a transformers pipeline device (-1 = CPU)."""
    if device == "cpu":
        return -1
    if device == "auto":
        import torch

        return 0 if torch.cuda.is_available() else -1
    return device  # "cuda", "cuda:1", ...


NO_WEIGHTS_HINT = ("download them where the hub is reachable (they land in the Hugging Face cache), point "
                   "depth.model at a local folder, or build with --depth gt (the source's own depth maps) or "
                   "--depth colour (decode <image>_d.png colour depth images)")


def _hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached now (one quick request), or None when it answers."""
    import requests

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        requests.head(endpoint, timeout=5, allow_redirects=False)
    except requests.RequestException as e:
        from sifthinker.data.chat_http import connection_problem

        return connection_problem(e, endpoint)
    return None


def check_dav2_weights(model: str, revision: str | None = None) -> None:
    """Fail at once, with what to do instead, when hub weights are neither cached nor downloadable.

    transformers would otherwise retry the hub for about a minute, warning on every try, before one
    error line that names no way out. A local folder and cached hub weights pass without a request."""
    if Path(model).expanduser().exists() or len(Path(model).parts) != 2 or "://" in model:
        return  # a local folder (or a name transformers will reject on its own, quickly)
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str):
        return
    why = "the hub is offline (HF_HUB_OFFLINE=1)" if _hub_offline() else _hub_unreachable()
    if why is not None and not why.startswith("the hub"):
        why = f"the hub cannot be reached ({why})"
    if why is not None:
        raise OSError(f"Depth-Anything-V2 weights {model!r} (depth.model) are not in the local Hugging Face "
                      f"cache and {why}: {NO_WEIGHTS_HINT}")


def _load_dav2(model: str, device: str, revision: str | None = None, batch_size: int = 8):
    from sifthinker.method.depth import DepthAnythingV2

    check_dav2_weights(model, revision)
    try:
        return DepthAnythingV2(model, device=_pipeline_device(device), revision=revision, batch_size=batch_size)
    except OSError as e:  # transformers says "not a valid model identifier" etc. at length
        raise OSError(f"cannot load Depth-Anything-V2 weights {model!r} (depth.model): "
                      f"{' '.join(str(e).split())[:300]}") from e


class DepthAnythingMaps:
    """Float depth maps for the data build (``--depth dav2``): Depth-Anything-V2 in batches, on the GPU
    when ``device`` is ``auto`` and one is present. The model loads on first use."""

    name = "dav2"

    def __init__(self, model: str, revision: str | None = None, device: str = "auto", batch_size: int = 8):
        self.model, self.revision, self.device, self.batch_size = model, revision, device, batch_size
        self.fingerprint = f"depth-anything-v2:{model}@{revision or 'default'}"
        self._estimator = None

    def estimate(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Relative depth maps (0 near, 1 far) at each image's size."""
        if not images:
            return []
        if self._estimator is None:
            self._estimator = _load_dav2(self.model, self.device, self.revision, self.batch_size)
        return self._estimator.estimate(images)


class DepthAnythingProvider:
    """Depth-Anything-V2 with a per-image cache (memory, plus PNG files when ``cache_dir`` is given)."""

    name = "depth-anything-v2"

    def __init__(self, model: str, device: str = "auto", cache_dir: str | Path | None = None,
                 memory_items: int = 256):
        self.model, self.device = model, device
        self.fingerprint = f"depth-anything-v2:{model}"
        key = hashlib.sha256(self.fingerprint.encode()).hexdigest()[:12]
        self.cache_dir = Path(cache_dir) / key if cache_dir else None
        self._memory: OrderedDict[str, Image.Image] = OrderedDict()
        self._memory_items = memory_items
        self._estimator = None
        self._lock = threading.Lock()  # endpoint evaluation asks from several threads; the model is not re-entrant
        self.estimated = 0  # images that went through the model (the rest came from a cache)

    def _estimate(self, image: Image.Image) -> Image.Image:
        if self._estimator is None:  # loaded on first use: a fully cached run never loads the weights
            self._estimator = _load_dav2(self.model, self.device)
        self.estimated += 1
        return colorize(self._estimator(image.convert("RGB")))

    def __call__(self, image: Image.Image) -> Image.Image:
        key = _image_key(image)
        with self._lock:
            return self._cached(key, image)

    def _cached(self, key: str, image: Image.Image) -> Image.Image:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        path = self.cache_dir / f"{key}.png" if self.cache_dir else None
        if path is not None and path.is_file():
            with Image.open(path) as im:
                out = im.convert("RGB")
        else:
            out = self._estimate(image)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                out.save(tmp, format="PNG")
                tmp.replace(path)  # never leave a half-written PNG under the final name
        self._memory[key] = out
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)
        return out


def make_depth_provider(cfg: DepthConfig, cache_dir: str | Path | None = None) -> DepthProvider:
    """The provider ``cfg.provider`` names (``cache_dir``: where Depth-Anything-V2 keeps its results)."""
    if cfg.provider == "fake-gradient":
        return FakeGradientDepth()
    if cfg.provider == "depth-anything-v2":
        return DepthAnythingProvider(cfg.model, cfg.device, cache_dir)
    raise ValueError(f"unknown depth provider {cfg.provider!r} (depth-anything-v2 or fake-gradient)")
