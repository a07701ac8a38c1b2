"""One shard of a build: its items loaded, given depth maps, trajectories and narrations, and written.

A shard is a range of a source's entries. :func:`run_shard` turns each entry into a record (files under
``shards/<name>/``) or a rejection with its reason, and writes ``shards/<name>/shard.json`` last, after
renaming the shard's temporary folder into place: a shard folder that exists is complete. Everything a
shard writes depends only on its entries and the build options (the trajectory randomness of item i is
seeded by (seed, part, i)), so a shard built again after a crash is byte-identical.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sifthinker.data.narrator import NarrationError, NarrationInput, Narrator, TemplateNarrator
from sifthinker.data.options import BuildOptions
from sifthinker.data.sources import Entry, Rejected, Source, SourceItem, make_source
from sifthinker.data.trajectory import Trajectory, build_trajectory, normalize_boxes, trajectory_config
from sifthinker.method import trace as sif_trace
from sifthinker.method.depth import colour_decoder, colour_png_bytes, png_bytes, save_depth_map
from sifthinker.method.prompts import prompt_text

log = logging.getLogger(__name__)
SHARD_FILE = "shard.json"


@dataclass
class ShardTask:
    part: int
    name: str  # the shard's folder under shards/
    entries: list[Entry]


@dataclass
class ShardContext:
    """What a process needs to build shards: made once per worker process."""

    options: BuildOptions
    root: Path  # the build folder (shards/ lives in it)
    sources: dict[int, Source] = field(default_factory=dict)
    narrator: Narrator | None = None
    _dav2: Any = None

    def source(self, part: int) -> Source:
        if part not in self.sources:
            self.sources[part] = make_source(self.options.parts[part].spec)
        return self.sources[part]

    def narrate(self, inputs: list[NarrationInput]) -> list[list[str] | NarrationError]:
        if self.narrator is None:
            if self.options.narrator == "vlm":
                from sifthinker.data.vlm_narrator import VLMNarrator

                self.narrator = VLMNarrator.from_options(self.options.vlm)
            else:
                self.narrator = TemplateNarrator()
        many = getattr(self.narrator, "narrate_many", None)
        if many is not None:
            return many(inputs)
        out: list[list[str] | NarrationError] = []
        for x in inputs:
            try:
                out.append(self.narrator.narrate(x))
            except NarrationError as e:
                out.append(e)
        return out

    def dav2(self) -> Any:
        if self._dav2 is None:
            from sifthinker.data.depth_providers import DepthAnythingMaps

            o = self.options
            self._dav2 = DepthAnythingMaps(o.depth_model, o.depth_revision, o.depth_device, o.depth_batch_size)
        return self._dav2


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _fill_depth(ctx: ShardContext, kind: str, items: dict[int, SourceItem], rejected: dict[int, str]) -> None:
    """Give every item its relative depth map (0 near, 1 far) by ``kind``; reject those that cannot have one."""
    todo = []
    for idx, item in list(items.items()):
        w, h = item.width_height
        try:
            if kind == "gt":
                if item.depth is None:
                    raise Rejected("no ground-truth depth map (build with --depth colour or dav2)")
            elif kind == "colour":
                if item.depth_file is None or not Path(item.depth_file).is_file():
                    raise Rejected(f"missing colour depth image: {item.depth_file or '(none named)'}")
                try:
                    item.depth = colour_decoder().decode(item.depth_file)
                except (OSError, ValueError) as e:
                    raise Rejected(f"corrupt colour depth image: {Path(item.depth_file).name} ({_reason(e)})") from e
            else:
                item.pixels()
                todo.append(idx)
                continue
            if item.depth.shape[:2] != (h, w):
                raise Rejected(f"depth map does not match the image: {item.depth.shape[1]}x{item.depth.shape[0]}, the image {w}x{h}")
        except Rejected as e:
            rejected[idx] = str(e)
            del items[idx]
    if todo:
        for idx, depth in zip(todo, ctx.dav2().estimate([items[i].pixels() for i in todo]), strict=True):
            items[idx].depth = depth


def _trajectory(ctx: ShardContext, part: int, idx: int, item: SourceItem) -> Trajectory:
    cfg = trajectory_config(ctx.options.parity)
    rng = np.random.default_rng([ctx.options.seed, part, idx])  # item i's randomness alone: shards are independent
    traj = build_trajectory(item.gt_boxes_px, item.depth, rng, cfg)
    if len(traj.steps) < cfg.min_steps or traj.steps[0].kind != "full":
        raise Rejected(f"too few focus steps: {len(traj.steps)} (the evidence fills the image)")
    return traj


def _write_files(ctx: ShardContext, folder: Path, stem: str, item: SourceItem) -> tuple[str, str, str]:
    if item.image_file is not None:  # the original bytes: no re-encoding, no loss, no time
        ext = Path(item.image_file).suffix.lower() or ".img"
        rel_img = f"images/{stem}{ext}"
        shutil.copyfile(item.image_file, folder / rel_img)
    else:
        rel_img = f"images/{stem}.png"
        im = item.image
        (folder / rel_img).write_bytes(png_bytes(np.asarray(im if im.mode == "RGB" else im.convert("RGB"))))
    rel_dimg = f"depth/{stem}.png"
    (folder / rel_dimg).write_bytes(colour_png_bytes(item.depth))
    rel_dmap = f"depth/{stem}.npy" if ctx.options.depth_format == "npy" else f"depth/{stem}.map.png"
    save_depth_map(folder / rel_dmap, item.depth)
    return rel_img, rel_dimg, rel_dmap


def _record(ctx: ShardContext, task: ShardTask, folder: Path, idx: int, item: SourceItem, text: str) -> dict:
    w, h = item.width_height
    paths = _write_files(ctx, folder, f"{idx:06d}", item)
    rel = [f"shards/{task.name}/{p}" for p in paths]
    gt = item.gt_norm if item.gt_norm is not None else [list(b) for b in normalize_boxes(item.gt_boxes_px, w, h)]
    rec = {
        "id": item.uid, "dataset": item.dataset, "source": ctx.options.parts[task.part].spec.name,
        "split": ctx.options.split, "category": item.category, "answer_type": item.answer_type,
        "image": rel[0], "depth_image": rel[1], "depth_map": rel[2], "width": w, "height": h, "box_frame": "norm",
        "problem": item.question, "response": item.answer,
        "normalized_solution_round": {"bbox_3d": gt, "illegal_content": False},
        "messages": [{"role": "user", "content": prompt_text(item.question)},
                     {"role": "assistant", "content": text}],
        "images": [rel[0], rel[1]], "shard": task.name,
    }
    if item.source_image:
        rec["source_image"] = item.source_image
    return rec


def run_shard(ctx: ShardContext, task: ShardTask) -> dict:
    """Build one shard into ``root/shards/<name>`` and return its ``shard.json`` content (module doc)."""
    source = ctx.source(task.part)
    kind = ctx.options.depth_for(getattr(source, "default_depth", "gt"))
    rejected: dict[int, str] = {}
    items: dict[int, SourceItem] = {}
    uids = {e.index: e.uid for e in task.entries}
    for e in task.entries:
        if e.duplicate_of:
            rejected[e.index] = f"duplicate: the same id or image and question as {e.duplicate_of}"
            continue
        try:
            items[e.index] = source.load(e)
        except (ValueError, TypeError, KeyError, OSError) as r:  # Rejected, or user data no parser foresaw
            rejected[e.index] = str(r) if isinstance(r, Rejected) else f"unreadable item: {type(r).__name__}: {_reason(r)}"
    _fill_depth(ctx, kind, items, rejected)

    trajs: dict[int, Trajectory] = {}
    for idx, item in list(items.items()):
        if item.trace is None:
            try:
                trajs[idx] = _trajectory(ctx, task.part, idx, item)
            except (Rejected, ValueError) as r:
                rejected[idx] = str(r)
                del items[idx]
    order = sorted(trajs)
    needs_image = getattr(ctx.narrator, "needs_image", ctx.options.narrator == "vlm")
    texts = ctx.narrate([NarrationInput(items[i].question, items[i].answer, items[i].category,
                                        items[i].evidence_names, trajs[i].steps,
                                        facts={"image": items[i].pixels()} if needs_image else {}) for i in order])
    narrated = dict(zip(order, texts, strict=True))

    final = ctx.root / "shards" / task.name
    tmp = final.parent / f".{task.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir(parents=True)
    (tmp / "images").mkdir()
    (tmp / "depth").mkdir()
    outcomes = []
    try:
        for e in task.entries:
            idx = e.index
            out: dict[str, Any] = {"index": idx, "id": uids[idx]}
            if idx in rejected:
                outcomes.append({**out, "rejected": rejected[idx]})
                continue
            item = items[idx]
            try:
                text, stats = _trace(item, trajs.get(idx), narrated.get(idx))
                out["record"] = _record(ctx, task, tmp, idx, item, text)
                out["stats"] = stats
            except Rejected as r:
                out = {**out, "rejected": str(r)}
            outcomes.append(out)
        shard = {"shard": task.name, "part": task.part, "entries": len(task.entries), "outcomes": outcomes}
        (tmp / SHARD_FILE).write_text(json.dumps(shard))  # compact: json's C encoder (indent makes it Python)
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same shard first: it wrote the same bytes
            if not (final / SHARD_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return shard


def _trace(item: SourceItem, traj: Trajectory | None, texts: Any) -> tuple[str, dict]:
    """The record's assistant trace and its statistics; Rejected when it cannot be valid."""
    if item.trace is not None:
        return item.trace, {"imported": True}
    if isinstance(texts, NarrationError):
        raise Rejected(f"narration failed: {_reason(texts)}")
    if traj is None or texts is None or len(texts) != len(traj.steps):
        raise Rejected("narration gave no text for some step")
    steps = tuple(
        sif_trace.Step(tuple(sif_trace.Box(*b, depth=d) for b, d in zip(s.boxes, s.depths, strict=True)), t)
        for s, t in zip(traj.steps, texts, strict=True)
    )
    try:
        text = sif_trace.render(sif_trace.Trace(steps=steps, answer=item.answer))
    except sif_trace.TraceFormatError as e:
        raise Rejected(f"invalid trace: {e}") from e
    return text, {"area_ratio": round(traj.area_ratio, 4), "distractor": any(s.kind == "distractor" for s in traj.steps),
                  "steps": len(traj.steps)}
