"""Build SIF records from a source: trajectory, narration, strict validation, files, in resumable shards.

Every item either becomes a record or is rejected with a reason: rejections are listed in
``rejections.jsonl`` (one line each: id, source, reason) and in ``manifest.json``, never dropped
silently. Layout of a built dataset (docs/data.md)::

    DIR/records.json        the records (docs/architecture.md), paths relative to DIR
    DIR/manifest.json       the build summary: counts, rejections, expansion area ratio, options
    DIR/rejections.jsonl    one line per rejected item
    DIR/build.json          the build's fingerprint (what a rerun must match to resume)
    DIR/shards/<p>-<k>/     images/, depth/ (colour PNG + float map) and shard.json of one shard

A build is all or nothing for its target (``sifthinker.data.output``): a local target changes only when
the build completes; an interrupted build (Ctrl-C, SIGKILL, a lost node) keeps its finished shards and
the same command resumes it, with a result byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sifthinker.config.run_config import RunConfig
from sifthinker.data.narrator import Narrator
from sifthinker.data.options import ALL, BuildOptions, Part, options_from_config
from sifthinker.data.output import MANIFEST_FILE, RECORDS_FILE, REJECTIONS_FILE, make_output
from sifthinker.data.record import SHARD_FILE
from sifthinker.data.shards import execute
from sifthinker.data.sources import (
    SOURCES,
    Entry,
    Source,
    SourceItem,
    SourceSpec,
    SyntheticSource,
    make_source,
)
from sifthinker.names import Stage
from sifthinker.runtime import events
from sifthinker.storage.disk_space import disk_full, folder_bytes, is_disk_full

__all__ = ["MANIFEST_FILE", "RECORDS_FILE", "REJECTIONS_FILE", "SOURCES", "BuildSummary", "SourceItem",
           "SyntheticSource", "build", "build_dataset", "build_records", "load_records"]

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    out_dir: str
    split: str
    num_records: int
    categories: dict[str, int]
    steps: dict[int, int]
    rejections: list[dict] = field(default_factory=list)
    source: str = ""
    seed: int = 0
    expansion_area_ratio: float | None = None  # mean area of the expanded frame / area of the GT boxes
    distractor_share: float | None = None  # share of built traces with a distractor frame
    shards: int = 0
    short: list[str] = field(default_factory=list)
    filtered: dict[str, Any] = field(default_factory=dict)
    shards_resumed: int = 0  # this run only (not in the manifest)
    seconds: float = 0.0  # this run only (not in the manifest)

    def rejection_reasons(self) -> dict[str, int]:
        return dict(Counter(r["reason"].split(":")[0] for r in self.rejections))

    def headline(self) -> str:
        """One line for a stage's end event, e.g. "160 train records (3 rejected)"."""
        return f"{self.num_records} {self.split} records ({len(self.rejections)} rejected)"

    def format(self) -> str:
        rate = f", {self.num_records / self.seconds:.0f} records/s" if self.seconds > 0 else ""
        lines = [f"built {self.num_records} {self.split} records in {self.out_dir} ({self.source}; {self.shards} "
                 f"shard(s), {self.shards_resumed} resumed; {self.seconds:.1f}s{rate})"]
        lines += [f"  category {k:<10} {v}" for k, v in sorted(self.categories.items())]
        lines += [f"  {k} steps: {v}" for k, v in sorted(self.steps.items())]
        if self.expansion_area_ratio is not None:
            lines.append(f"  expansion area ratio (expanded frame / GT boxes): mean {self.expansion_area_ratio:.2f}")
        if self.distractor_share is not None:
            lines.append(f"  traces with a distractor: {self.distractor_share:.0%}")
        lines += [f"  {s}" for s in self.short]
        lines.append(f"  rejected: {len(self.rejections)}")
        lines += [f"    {reason}: {n}" for reason, n in sorted(self.rejection_reasons().items())]
        if self.rejections:
            lines.append(f"  one line per rejected item: {self.out_dir.rstrip('/')}/{REJECTIONS_FILE}")
        return "\n".join(lines)

    def manifest(self, options: BuildOptions) -> dict:
        """What ``manifest.json`` holds: the summary without this run's own facts (paths, time)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("out_dir", "shards_resumed", "seconds")}
        return {**out, "options": options.fingerprint()}


class _ItemsSource:
    """Adapts a source written as ``items(seed) -> iterator of SourceItem`` (one process only)."""

    def __init__(self, source: Any):
        self.inner, self.name = source, source.name
        self.default_depth = getattr(source, "default_depth", "gt")

    def entries(self, seed: int) -> Iterator[Entry]:
        for i, item in enumerate(self.inner.items(seed)):
            yield Entry(uid=item.uid, index=i, raw=item)

    def load(self, entry: Entry) -> SourceItem:
        return entry.raw


def _bytes_still_needed(root: Path, num: int) -> float | None:
    """The records not yet built times the bytes per record of the finished shards (None: no estimate)."""
    shards = [p for p in (Path(root) / "shards").glob("*") if (p / SHARD_FILE).is_file()]
    built = sum(sum(1 for o in json.loads((p / SHARD_FILE).read_text())["outcomes"] if "record" in o) for p in shards)
    if not built or num >= ALL:
        return None
    return folder_bytes(Path(root) / "shards") / built * max(num - built, 1)


def build(options: BuildOptions, out: str | Path, sources: dict[int, Source] | None = None,
          narrator: Narrator | None = None, progress: bool = True, staging_root: str | Path | None = None
          ) -> BuildSummary:
    """Build (or resume) the dataset ``options`` describe into ``out`` (a folder or ``s3://`` prefix)."""
    t0 = time.monotonic()
    output = make_output(out, staging_root or options.cache_dir or RunConfig().path("cache"))
    sources = {p: (sources or {}).get(p) or make_source(part.spec) for p, part in enumerate(options.parts)}
    done = output.prepare(options.fingerprint())  # before the progress bar: a bad target is one line
    num = options.num
    bar = tqdm(total=num if num < ALL else None, desc=f"build {options.split}", unit="rec", disable=not progress)
    built = 0

    def advance(n: int) -> None:
        nonlocal built
        n = min(n, num - built)
        built += n
        bar.update(n)
        events.progress(Stage.BUILD_DATA, built, num if num < ALL else None, note=options.split)

    try:
        result = execute(options, output, done, sources, narrator, advance)
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise disk_full(e, output.root, _bytes_still_needed(output.root, num), "the dataset") from e
    finally:
        bar.close()
    records = result.records
    ratios = [s["area_ratio"] for s in result.stats if s.get("area_ratio") is not None]
    built_traces = [s for s in result.stats if "distractor" in s]
    summary = BuildSummary(
        out_dir=output.display, split=options.split, num_records=len(records),
        categories=dict(Counter(r["category"] for r in records)),
        steps=dict(Counter(r["messages"][1]["content"].count("<area>") for r in records)),
        rejections=result.rejections, source="+".join(p.spec.name for p in options.parts), seed=options.seed,
        expansion_area_ratio=round(float(np.mean(ratios)), 3) if ratios else None,
        distractor_share=round(sum(s["distractor"] for s in built_traces) / len(built_traces), 3) if built_traces else None,
        shards=len(result.keep), short=result.short,
        filtered={s.name: s.describe() for s in sources.values() if hasattr(s, "describe")},
        shards_resumed=result.shards_resumed,
    )
    for line in result.short:
        log.warning("%s", line)
    top = {
        REJECTIONS_FILE: "".join(json.dumps(r) + "\n" for r in result.rejections).encode(),
        MANIFEST_FILE: json.dumps(summary.manifest(options), indent=1).encode(),
        RECORDS_FILE: records_json(records),  # last: its presence means a complete dataset
    }
    try:
        output.finish(top, result.keep, result.drop)
    except Exception as e:  # records.json is written last: without it nothing is taken for a finished dataset
        if not is_disk_full(e):
            raise
        raise disk_full(e, output.root, sum(len(b) for b in top.values()), "the dataset") from e
    summary.seconds = time.monotonic() - t0
    return summary


def records_json(records: list[dict]) -> bytes:
    """``records.json``: a JSON list, one record per line (readable, and json's fast C encoder per record)."""
    return ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n").encode()


def build_records(source: Any, num: int, seed: int, out_dir: str | Path, split: str = "train",
                  narrator: Narrator | None = None, progress: bool = True, max_rejections: int | None = None,
                  workers: int = 1, shard_size: int = 256, depth: str = "auto", parity: str = "fixed",
                  **options: Any) -> BuildSummary:
    """Build ``num`` records of one source object into ``out_dir`` (see :func:`build`).

    ``source`` is a source (``entries``/``load``) or an object with ``items(seed)``; several
    ``workers`` need a source that can be made again from its ``spec()`` in each worker process.
    """
    if not hasattr(source, "entries"):
        source = _ItemsSource(source)
    spec = source.spec(seed) if hasattr(source, "spec") else SourceSpec(source.name, seed=seed)
    kind = depth if depth != "auto" else getattr(source, "default_depth", "gt")
    spec = replace(spec, options=tuple(sorted({**dict(spec.options), "depth": kind}.items())))
    opts = BuildOptions(parts=(Part(spec, num),), seed=seed, split=split, shard_size=shard_size, depth=depth,
                        parity=parity, workers=workers, max_rejections=max_rejections, **options)
    return build(opts, out_dir, {0: source}, narrator, progress)


def build_dataset(cfg: RunConfig, split: str, out_dir: Path, progress: bool = True) -> BuildSummary:
    """The build_data stage: the recipe's sources, sizes and seeds for ``split`` ("train" or "eval")."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    options = options_from_config(cfg, split, cache_dir=str(cfg.path("cache")))
    return build(options, out_dir, progress=progress)


def load_records(data_dir: Path) -> list[dict]:
    path = Path(data_dir) / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RECORDS_FILE} in {data_dir}: is this a built SIF dataset?")
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    return records
