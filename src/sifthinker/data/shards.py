"""Run a build's shards in parallel worker processes, resume finished ones, and assemble the result.

Each part (source) is cut into shards of ``shard_size`` consecutive entries. Shards are handed to
``workers`` processes (or built in this process when ``workers`` is 1) in order, just enough of them to
reach the part's record count; a shard finished by an earlier run with the same fingerprint is read
back instead of built. The dataset is then the first ``num`` accepted records of each part in entry
order, with the rejections among the entries before the last of them: it depends only on the options,
not on how many processes ran, in which order shards finished, or how often the build was interrupted.
Duplicates (the same id, or the same image and question, as an earlier entry) are rejected here in
entry order, so no two shards ever hold the same item.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sifthinker.data.narrator import Narrator
from sifthinker.data.options import ALL, BuildOptions
from sifthinker.data.record import ShardContext, ShardTask, run_shard
from sifthinker.data.sources import Entry, Source, make_source

log = logging.getLogger(__name__)

_CTX: ShardContext | None = None  # a worker process's context (set by _init)
_UPLOADER: Any = None


def _init(options: BuildOptions, root: str, uploader: Any) -> None:
    global _CTX, _UPLOADER
    _CTX, _UPLOADER = ShardContext(options, Path(root)), uploader


def _work(task: ShardTask) -> dict:
    assert _CTX is not None
    shard = run_shard(_CTX, task)
    if _UPLOADER is not None:
        _UPLOADER.commit(_CTX.root, task.name)
    return shard


class _Inline:
    """The executor of a one-process build: shards run in this process, one at a time."""

    def __init__(self, ctx: ShardContext, uploader: Any):
        self.ctx, self.uploader = ctx, uploader

    def submit(self, task: ShardTask) -> Future:
        f: Future = Future()
        try:
            shard = run_shard(self.ctx, task)
            if self.uploader is not None:
                self.uploader.commit(self.ctx.root, task.name)
            f.set_result(shard)
        except BaseException as e:  # handed to the caller's loop, raised there
            f.set_exception(e)
        return f

    def shutdown(self, cancel: bool = False) -> None:
        pass


class _Pool:
    def __init__(self, options: BuildOptions, root: Path, uploader: Any):
        # spawn, not fork: a worker may load a CUDA depth model, and threads (tqdm, boto3) do not survive fork
        self.pool = ProcessPoolExecutor(options.processes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init, initargs=(options, str(root), uploader))

    def submit(self, task: ShardTask) -> Future:
        return self.pool.submit(_work, task)

    def shutdown(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


@dataclass
class Assembled:
    """The dataset's records and rejections in order, and what to keep of the shards."""

    records: list[dict] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)  # per record
    keep: set[str] = field(default_factory=set)  # shard folders the records live in
    drop: list[str] = field(default_factory=list)  # files of records past a part's count
    shards_built: int = 0
    shards_resumed: int = 0
    short: list[str] = field(default_factory=list)  # parts whose source ran out before their count


def _dedup(entries: list[Entry], seen_ids: dict[str, str], seen_keys: dict[str, str]) -> None:
    for e in entries:
        first = seen_ids.get(e.uid) or (seen_keys.get(e.key) if e.key else None)
        if first is not None:
            e.duplicate_of = first
            continue
        seen_ids[e.uid] = e.uid
        if e.key:
            seen_keys[e.key] = e.uid


def execute(options: BuildOptions, output: Any, done: set[str], sources: dict[int, Source] | None = None,
            narrator: Narrator | None = None, on_progress: Callable[[int], None] | None = None) -> Assembled:
    """Build every shard needed, reading back those in ``done`` (finished earlier), and assemble the
    dataset (module docstring); ``output.prepare`` has made its folder."""
    sources = dict(sources or {})
    ctx = ShardContext(options, output.root, sources=sources, narrator=narrator)
    inline = options.processes <= 1
    if not inline and (narrator is not None or any(not hasattr(s, "spec") for s in sources.values())):
        # workers make their own from the options: an object made in code cannot follow them
        raise ValueError("a build with several workers needs sources and narrators made from options")
    runner: Any = _Inline(ctx, output.uploader) if inline else _Pool(options, output.root, output.uploader)
    results: dict[str, dict] = {}
    names: list[list[str]] = []
    out = Assembled()
    max_rej = options.max_rejections if options.max_rejections is not None else max(20, options.num)
    try:
        for p, part in enumerate(options.parts):
            source = sources.get(p) or make_source(part.spec)
            sources[p] = source
            names.append([])
            _run_part(p, part.num, source.entries(options.seed), options, runner, output, done, results,
                      names[p], out, max_rej, on_progress)
    except BaseException:
        runner.shutdown(cancel=True)
        raise
    runner.shutdown()
    _assemble(options, names, results, out)
    return out


def _run_part(p: int, need: int, stream: Iterator[Entry], options: BuildOptions, runner: Any, output: Any,
              done: set[str], results: dict[str, dict], names: list[str], out: Assembled, max_rej: int,
              on_progress: Callable[[int], None] | None) -> None:
    seen_ids: dict[str, str] = {}
    seen_keys: dict[str, str] = {}
    in_flight: dict[Future, tuple[str, int]] = {}
    accepted = processed = pending = 0
    exhausted = False
    limit = max(2, 2 * options.processes)
    while True:
        rate = accepted / processed if processed else 1.0
        while not exhausted and len(in_flight) < limit and accepted + pending * max(rate, 0.05) < need:
            chunk = list(islice(stream, min(options.shard_size, need)))  # a small build needs no 256-item shard
            if not chunk:
                exhausted = True
                break
            _dedup(chunk, seen_ids, seen_keys)
            name = f"{p}-{len(names):05d}"
            names.append(name)
            if name in done:
                results[name] = output.load_shard(name)
                out.shards_resumed += 1
                accepted, processed = _count(results[name], accepted, processed, on_progress)
                continue
            in_flight[runner.submit(ShardTask(p, name, chunk))] = (name, len(chunk))
            pending += len(chunk)
        if not in_flight:
            break
        finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for f in finished:
            name, n = in_flight.pop(f)
            pending -= n
            try:
                results[name] = f.result()
            except BrokenProcessPool as e:
                raise RuntimeError("a build worker process died (out of memory?); run the same command "
                                   "again to resume from the finished shards") from e
            out.shards_built += 1
            accepted, processed = _count(results[name], accepted, processed, on_progress)
        rejected = sum(1 for n in names if n in results for o in results[n]["outcomes"] if "rejected" in o)
        if rejected > max_rej:
            reasons = Counter(o["rejected"].split(":")[0] for n in names if n in results
                              for o in results[n]["outcomes"] if "rejected" in o)
            raise RuntimeError(f"{rejected} items rejected while building {options.split} (more than {max_rej}); "
                               f"most common: {reasons.most_common(1)[0][0]}; see the reasons with -v")


def _count(shard: dict, accepted: int, processed: int, on_progress: Callable[[int], None] | None) -> tuple[int, int]:
    n = sum(1 for o in shard["outcomes"] if "record" in o)
    if on_progress is not None:
        on_progress(n)
    return accepted + n, processed + len(shard["outcomes"])


def _assemble(options: BuildOptions, names: list[list[str]], results: dict[str, dict], out: Assembled) -> None:
    for p, part in enumerate(options.parts):
        got = 0
        for name in names[p]:
            if got >= part.num:
                break
            out.keep.add(name)
            for o in results[name]["outcomes"]:
                if got >= part.num:
                    if "record" in o:
                        rec = o["record"]
                        out.drop += [rec["image"], rec["depth_image"], rec["depth_map"]]
                    continue
                if "record" in o:
                    out.records.append(o["record"])
                    out.stats.append(o.get("stats", {}))
                    got += 1
                else:
                    out.rejections.append({"id": o["id"], "source": part.spec.name, "reason": o["rejected"]})
        if got < part.num < ALL:
            out.short.append(f"{part.spec.name}: {got} of {part.num} records (the source ran out)")
