"""What every data source shares: the item type, the entry type, the protocol, and input checks.

A source is read in two steps so that a build can run in parallel processes and resume: ``entries(seed)``
is cheap and runs in the parent (it reads the annotation file and yields one small, picklable
:class:`Entry` per item, in file order), ``load(entry)`` runs in a worker and opens the files. Any
problem with one item (a missing or corrupt image, an empty, inverted or out-of-range box, an empty
question) is a :class:`Rejected` with a one-line reason: the builder lists it and goes on. Problems
with the whole input (no such file, not JSON) are a :class:`SourceError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image

PxBox = tuple[float, float, float, float]


class SourceError(ValueError):
    """The input as a whole cannot be read (a one-line message for the user)."""


class Rejected(ValueError):
    """One item cannot become a record; the message is its rejection reason."""


@dataclass
class SourceItem:
    """One question about one image, with its ground-truth evidence boxes in pixels."""

    uid: str
    image: Image.Image | None  # decoded pixels; None when ``image_file`` is copied as it is
    depth: np.ndarray | None  # relative depth, 0 near .. 1 far, same size as the image, when the source has it
    question: str
    answer: str
    answer_type: str
    category: str
    gt_boxes_px: list[PxBox]
    evidence_names: list[str]
    dataset: str
    image_file: Path | None = None  # an original image file: copied byte for byte, never re-encoded
    depth_file: Path | None = None  # its colour depth PNG, for ``--depth colour``
    size: tuple[int, int] | None = None  # (width, height) when ``image`` is None
    gt_norm: list[list[float]] | None = None  # boxes already normalised (an imported record): kept exactly
    trace: str | None = None  # an existing assistant trace (SIF-50K import): no trajectory, no narration
    source_image: str | None = None  # the image as the source names it (provenance, duplicate checks)

    @property
    def width_height(self) -> tuple[int, int]:
        if self.image is not None:
            return self.image.size
        if self.size is None:
            raise ValueError(f"{self.uid}: no image and no size")
        return self.size

    def pixels(self) -> Image.Image:
        """The RGB image, decoded on first use (a depth model or a VLM narrator needs the pixels)."""
        if self.image is None:
            if self.image_file is None:
                raise Rejected("no image")
            try:
                with Image.open(self.image_file) as im:
                    self.image = im.convert("RGB")
            except (OSError, ValueError) as e:
                raise Rejected(f"corrupt image: {self.source_image or self.image_file} ({_one_line(e)})") from e
        return self.image


@dataclass
class Entry:
    """A reference to one item of a source, small enough to send to a worker process."""

    uid: str
    index: int  # position in the source's (filtered) stream: shards are ranges of it
    raw: Any = None  # the source's own record
    key: str | None = None  # items with the same key are duplicates (the image and the question)
    duplicate_of: str | None = None  # set by the builder: the uid of the first item with this key


class Source(Protocol):
    name: str
    default_depth: str  # "gt", "colour" or "dav2": what ``--depth auto`` means for this source

    def entries(self, seed: int) -> Iterator[Entry]: ...

    def load(self, entry: Entry) -> SourceItem: ...


@dataclass(frozen=True)
class SourceSpec:
    """How to make a source again in another process (``sifthinker.data.sources.make_source``)."""

    name: str
    input: str | None = None
    image_root: str | None = None
    split: str = "all"  # "train" / "eval": the hash split of file-backed sources (``holdout``); "all": no split
    holdout: float = 0.0
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = field(default=())  # source-specific, e.g. (("max_per_subset", 10000),)

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input, "image_root": self.image_root, "split": self.split,
                "holdout": self.holdout, "seed": self.seed, "options": dict(self.options)}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def in_split(uid: str, split: str, holdout: float) -> bool:
    """Whether item ``uid`` belongs to ``split``: a stable hash puts a ``holdout`` share in "eval"."""
    if split == "all" or holdout <= 0:
        return True
    h = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") / 2**64
    return (h < holdout) == (split == "eval")


def input_file(spec: SourceSpec, what: str) -> tuple[Path, str]:
    """The source's input as a local file, and the folder its image paths default to (``s3://`` too).

    An ``s3://`` input is downloaded once into the cache (``localize``); its images stay on S3, beside it.
    """
    uri = str(spec.input)
    if uri.startswith("s3://"):
        from sifthinker.storage.locations import StorageError, localize

        cache = Path(spec.option("cache_dir") or Path.home() / ".cache" / "sifthinker" / "data")
        try:
            local = localize(uri, cache)
        except StorageError as e:
            raise SourceError(f"{what}: {e}") from e
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        return require_file(local / name if local.is_dir() else local, what), uri.rstrip("/").rsplit("/", 1)[0]
    path = require_file(Path(uri), what)
    return path, str(path.parent)


def require_file(path: Path, what: str) -> Path:
    """The input file of a source, checked before any work (a one-line error otherwise)."""
    if not path.is_file():
        raise SourceError(f"{what}: {path} does not exist" if not path.exists() else f"{what}: {path} is not a file")
    return path


def read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise SourceError(f"{what}: {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{what}: cannot read {path}: {_one_line(e)}") from e
    except ValueError as e:
        raise SourceError(f"{what}: {path} is not valid JSON ({_one_line(e)})") from e


def text(value: Any, what: str) -> str:
    """A non-empty, stripped string field, else :class:`Rejected`."""
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise Rejected(f"empty {what}")
    return str(value).strip()


def image_size(path: Path, shown: str) -> tuple[int, int]:
    """(width, height) of an image file after checking it decodes (JPEGs at 1/8 scale: a cheap full read)."""
    if not path.is_file():
        raise Rejected(f"missing image file: {shown}")
    try:
        with Image.open(path) as im:
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG only; others decode fully
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise Rejected(f"corrupt image: {shown} ({_one_line(e)})") from e
    if size[0] < 2 or size[1] < 2:
        raise Rejected(f"image too small: {shown} is {size[0]}x{size[1]} pixels")
    return size


def check_boxes(boxes: Any, width: int, height: int, slack: float = 1.0) -> list[PxBox]:
    """Pixel boxes ``[[x1, y1, x2, y2], ...]`` checked against a ``width x height`` image.

    Rejected: no boxes, a box that is not 4 finite numbers, an empty or inverted box, a box outside the
    image by more than ``slack`` pixels (annotation rounding); boxes within the slack are clipped.
    """
    if not isinstance(boxes, list | tuple) or not boxes:
        raise Rejected("no ground-truth boxes")
    out: list[PxBox] = []
    for b in boxes:
        if (not isinstance(b, list | tuple) or len(b) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in b)):
            raise Rejected(f"malformed box: {_short(b)} (expected [x1, y1, x2, y2] in pixels)")
        x1, y1, x2, y2 = (float(v) for v in b)
        if x2 <= x1 or y2 <= y1:
            raise Rejected(f"empty or inverted box: {_short(b)}")
        if x1 < -slack or y1 < -slack or x2 > width + slack or y2 > height + slack:
            raise Rejected(f"box outside the image: {_short(b)} in {width}x{height}")
        c = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
        if c[2] <= c[0] or c[3] <= c[1]:
            raise Rejected(f"box outside the image: {_short(b)} has no area in {width}x{height}")
        out.append(c)
    return out


def _short(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, list | tuple | dict | str | int | float) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


class Locator:
    """Finds the files a source's paths name, under one or more roots (local folders or ``s3://``).

    A relative path is tried under each root as written, then without leading ``..`` components and then
    without one more leading folder (the released SIF-50K writes ``../data/...`` relative to a training
    folder, which is rarely where a user puts the files). An S3 object is fetched into ``cache_dir`` when
    found, one file at a time.
    """

    def __init__(self, roots: list[str], cache_dir: str | Path | None = None):
        self.roots = [str(r).rstrip("/") for r in roots]
        self.cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "sifthinker" / "data"

    @staticmethod
    def _variants(rel: str) -> list[str]:
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        while parts and parts[0] == "..":
            parts = parts[1:]
        out = [rel, "/".join(parts)]
        if len(parts) > 1:
            out.append("/".join(parts[1:]))
        return list(dict.fromkeys(out))

    def find(self, rel: Any, what: str = "image", extra: tuple[str, ...] = ()) -> tuple[Path, str]:
        """The local file for ``rel`` (also trying ``extra`` spellings) and the path as written."""
        if not isinstance(rel, str) or not rel.strip():
            raise Rejected(f"no {what} path")
        if Path(rel).is_absolute():
            if not Path(rel).is_file():
                raise Rejected(f"missing {what} file: {rel}")
            return Path(rel), rel
        for root in self.roots:
            for cand in [v for r in (rel, *extra) for v in self._variants(r)]:
                if root.startswith("s3://"):
                    from sifthinker.storage.locations import fetch_object

                    got = fetch_object(f"{root}/{cand}", self.cache_dir)
                    if got is not None:
                        return got, rel
                elif (Path(root) / cand).is_file():
                    return Path(root) / cand, rel
        raise Rejected(f"missing {what} file: {rel}")


def beside_depth(rel: str) -> str:
    """The original layout's colour depth PNG of an image path: ``<stem>_d.png`` in the same folder."""
    p = PurePosixPath(rel)
    return str(p.with_name(f"{p.stem}_d.png"))


def colour_depth(spec: SourceSpec, locator: Locator, rel: str | None, *alts: str) -> Path | None:
    """The colour depth PNG at ``rel`` (or ``alts``), fetched only when this build decodes them."""
    if spec.option("depth") != "colour":
        return None
    if not rel:
        raise Rejected("missing colour depth image: none named")
    path, _ = locator.find(rel, "colour depth image", extra=alts)
    return path


class FileSource:
    """What the file-backed sources share: a required ``--input``, a locator for its images, the split."""

    name = ""
    missing_input = ""  # the error's hint when --input is missing, e.g. "give the TallyQA JSON (--input)"

    def __init__(self, spec: SourceSpec):
        if not spec.input:
            raise SourceError(f"{self.name}: {self.missing_input}")
        self.spec_ = spec
        self.input, here = input_file(spec, self.name)
        self.locator = Locator(self.image_roots(spec, here), spec.option("cache_dir"))

    def image_roots(self, spec: SourceSpec, here: str) -> list[str]:
        """Where relative image paths are looked up: --image-root, else beside the input."""
        return [spec.image_root or here]

    def spec(self, seed: int = 0) -> SourceSpec:
        return self.spec_

    def in_split(self, candidates: Iterable[tuple[str, Any, str | None]]) -> Iterator[Entry]:
        """Entries of the (uid, raw, key) candidates in this build's split, numbered in stream order."""
        n = 0
        for uid, raw, key in candidates:
            if in_split(uid, self.spec_.split, self.spec_.holdout):
                yield Entry(uid=uid, index=n, raw=raw, key=key)
                n += 1
