"""Build SIF records from a source: trajectory, narration, strict validation, files on disk.

Every item either becomes a record or is rejected with a reason; rejections are listed in
`manifest.json` and the summary, never dropped silently.

A build is all or nothing: it writes into a hidden temporary sibling of the target folder and moves
it into place only when complete, so an interrupted or failed build leaves the target as it was and a
rebuild never mixes with files of an earlier build.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from sifthinker import events
from sifthinker import trace as sif_trace
from sifthinker.config import RunConfig
from sifthinker.data.narrator import NarrationError, NarrationInput, Narrator, TemplateNarrator
from sifthinker.data.trajectory import DEFAULT_CONFIG, TrajectoryConfig, build_trajectory, normalize_boxes
from sifthinker.depth import colorize, save_depth_map
from sifthinker.names import Stage
from sifthinker.prompts import prompt_text

log = logging.getLogger(__name__)

RECORDS_FILE = "records.json"
MANIFEST_FILE = "manifest.json"


@dataclass
class SourceItem:
    """One question about one image, with its ground-truth evidence boxes in pixels."""

    uid: str
    image: Image.Image
    depth: np.ndarray  # relative depth, 0 near .. 1 far, same size as the image
    question: str
    answer: str
    answer_type: str
    category: str
    gt_boxes_px: list[tuple[float, float, float, float]]
    evidence_names: list[str]
    dataset: str


class Source(Protocol):
    name: str

    def items(self, seed: int) -> Iterator[SourceItem]:
        """An endless (or long) stream of items; the builder takes what it needs."""
        ...


class SyntheticSource:
    """Scenes from `sifthinker.scenes`: exact answers, exact boxes, exact depth. No download."""

    name = "synthetic"

    def __init__(self, width: int = 320, height: int = 240, max_items: int = 1_000_000):
        self.width, self.height, self.max_items = width, height, max_items

    def items(self, seed: int) -> Iterator[SourceItem]:
        from sifthinker.scenes import generate_items

        for i, (scene, q) in enumerate(generate_items(self.max_items, seed, width=self.width, height=self.height)):
            by_id = {o.id: o for o in scene.objects}
            yield SourceItem(
                uid=f"synthetic-s{seed}-{i:06d}",
                image=Image.fromarray(scene.rgb),
                depth=scene.depth,
                question=q.question,
                answer=q.answer,
                answer_type=q.answer_type,
                category=q.category,
                gt_boxes_px=[tuple(float(v) for v in b) for b in q.boxes],
                evidence_names=[by_id[e].name for e in q.evidence],
                dataset="synthetic",
            )


SOURCES = {"synthetic": SyntheticSource}


def make_source(cfg: RunConfig) -> Source:
    if cfg.data.source not in SOURCES:
        raise ValueError(f"unknown data source {cfg.data.source!r}; available: {sorted(SOURCES)}")
    return SOURCES[cfg.data.source](width=cfg.data.width, height=cfg.data.height)


@dataclass
class BuildSummary:
    out_dir: str
    split: str
    num_records: int
    categories: dict[str, int]
    steps: dict[int, int]
    rejections: list[dict] = field(default_factory=list)

    def rejection_reasons(self) -> dict[str, int]:
        return dict(Counter(r["reason"].split(":")[0] for r in self.rejections))

    def headline(self) -> str:
        """One line for a stage's end event, e.g. "160 train records (3 rejected)"."""
        return f"{self.num_records} {self.split} records ({len(self.rejections)} rejected)"

    def format(self) -> str:
        lines = [f"built {self.num_records} {self.split} records in {self.out_dir}"]
        lines += [f"  category {k:<10} {v}" for k, v in sorted(self.categories.items())]
        lines += [f"  {k} steps: {v}" for k, v in sorted(self.steps.items())]
        lines.append(f"  rejected: {len(self.rejections)}")
        lines += [f"    {reason}: {n}" for reason, n in sorted(self.rejection_reasons().items())]
        return "\n".join(lines)


def make_record(item: SourceItem, idx: int, split: str, out_dir: Path, narrator: Narrator,
                rng: np.random.Generator, traj_cfg: TrajectoryConfig) -> dict:
    """One SIF record (files written under out_dir); raises ValueError with the rejection reason."""
    w, h = item.image.size
    if item.depth.shape[:2] != (h, w):
        raise ValueError(f"depth map shape {item.depth.shape} does not match image {w}x{h}")
    traj = build_trajectory(item.gt_boxes_px, item.depth, rng, traj_cfg)
    if len(traj.steps) < traj_cfg.min_steps or traj.steps[0].kind != "full":
        raise ValueError(f"too few focus steps: {len(traj.steps)} (the evidence fills the image)")
    try:
        texts = narrator.narrate(NarrationInput(item.question, item.answer, item.category,
                                                item.evidence_names, traj.steps))
    except NarrationError as e:
        raise ValueError(f"narration failed: {e}") from e
    steps = tuple(
        sif_trace.Step(tuple(sif_trace.Box(*b, depth=d) for b, d in zip(s.boxes, s.depths, strict=True)), t)
        for s, t in zip(traj.steps, texts, strict=True)
    )
    text = sif_trace.render(sif_trace.Trace(steps=steps, answer=item.answer))
    problems = sif_trace.validate(text)
    if problems:
        raise ValueError(f"invalid trace: {problems[0]}")
    gt_norm = [list(b) for b in normalize_boxes(item.gt_boxes_px, w, h)]

    stem = f"{idx:06d}"
    rel_img, rel_dimg, rel_dmap = f"images/{stem}.png", f"depth/{stem}.png", f"depth/{stem}.npy"
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    item.image.convert("RGB").save(out_dir / rel_img)
    colorize(item.depth).save(out_dir / rel_dimg)
    save_depth_map(out_dir / rel_dmap, item.depth)
    return {
        "id": item.uid, "dataset": item.dataset, "source": item.dataset, "split": split,
        "category": item.category, "answer_type": item.answer_type,
        "image": rel_img, "depth_image": rel_dimg, "depth_map": rel_dmap,
        "width": w, "height": h, "box_frame": "norm",
        "problem": item.question, "response": item.answer,
        "normalized_solution_round": {"bbox_3d": gt_norm, "illegal_content": False},
        "messages": [{"role": "user", "content": prompt_text(item.question)},
                     {"role": "assistant", "content": text}],
        "images": [rel_img, rel_dimg],
    }


def build_records(source: Source, num: int, seed: int, out_dir: Path, split: str = "train",
                  narrator: Narrator | None = None, traj_cfg: TrajectoryConfig = DEFAULT_CONFIG,
                  progress: bool = True, max_rejections: int | None = None) -> BuildSummary:
    """Build `num` accepted records into out_dir (records.json + manifest.json + image/depth files).

    out_dir may be absent, an empty folder (e.g. a KFP output artifact) or an earlier dataset, which
    is replaced whole. Nothing changes in out_dir unless the build completes (see the module doc).
    """
    out_dir = Path(out_dir)
    # A link is followed: the data goes where it points, the link itself stays.
    target = out_dir.resolve() if out_dir.is_symlink() else out_dir
    _check_target(target)
    tmp = _temp_sibling(target, "tmp")
    try:
        summary = _build_into(tmp, source, num, seed, split, narrator, traj_cfg, progress, max_rejections)
        summary.out_dir = str(out_dir)
        (tmp / MANIFEST_FILE).write_text(json.dumps({**asdict(summary), "source": source.name, "seed": seed},
                                                    indent=1))
        _publish(tmp, target)
    except BaseException:  # KeyboardInterrupt included: no half-written dataset, anywhere
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _build_into(out_dir: Path, source: Source, num: int, seed: int, split: str, narrator: Narrator | None,
                traj_cfg: TrajectoryConfig, progress: bool, max_rejections: int | None) -> BuildSummary:
    narrator = narrator or TemplateNarrator()
    rng = np.random.default_rng(seed)  # trajectory randomness (distractor), separate from scene seeds
    max_rejections = max_rejections if max_rejections is not None else max(20, num)
    records: list[dict] = []
    rejections: list[dict] = []
    stream = source.items(seed)
    bar = tqdm(total=num, desc=f"build {split}", unit="rec", disable=not progress)
    try:
        while len(records) < num:
            try:
                item = next(stream)
            except StopIteration:
                break
            try:
                records.append(make_record(item, len(records), split, out_dir, narrator, rng, traj_cfg))
                bar.update(1)
                events.progress(Stage.BUILD_DATA, len(records), num, note=split)
            except ValueError as e:
                rejections.append({"id": item.uid, "reason": str(e)})
                log.debug("rejected %s: %s", item.uid, e)
                if len(rejections) > max_rejections:
                    raise RuntimeError(
                        f"{len(rejections)} items rejected while building {split}; last reason: {e}"
                    ) from e
    finally:
        bar.close()
    if len(records) < num:
        log.warning("source %s ran out after %d of %d records", source.name, len(records), num)
    (out_dir / RECORDS_FILE).write_text(json.dumps(records, indent=1))
    return BuildSummary(
        out_dir=str(out_dir), split=split, num_records=len(records),
        categories=dict(Counter(r["category"] for r in records)),
        steps=dict(Counter(r["messages"][1]["content"].count("<area>") for r in records)),
        rejections=rejections,
    )


def _check_target(out_dir: Path) -> None:
    """Refuse targets a build must not replace, before any work: a file, or a folder of other things."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (
        (out_dir / RECORDS_FILE).is_file() or (out_dir / MANIFEST_FILE).is_file()
    ):
        # The target is replaced whole: never delete a folder that is not an earlier dataset.
        raise FileExistsError(f"{out_dir} is not empty and holds no SIF dataset ({RECORDS_FILE}); "
                              "refusing to replace it")


def _temp_sibling(out_dir: Path, kind: str) -> Path:
    """A new hidden folder beside out_dir: same file system, so the final renames are atomic."""
    if out_dir.parent.exists() and not out_dir.parent.is_dir():  # mkdir would say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out_dir.parent))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    path = out_dir.parent / f".{out_dir.name}.{kind}-{secrets.token_hex(4)}"
    path.mkdir()  # mkdir, not mkdtemp: the dataset gets the usual umask permissions, not 0700
    return path


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished build `tmp` to `out_dir`; an earlier dataset there is swapped out, then deleted."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    if not any(out_dir.iterdir()):
        try:
            os.replace(tmp, out_dir)  # POSIX renames over an empty folder atomically; same final path
        except OSError:  # e.g. the empty folder is a mount point: move the finished files in instead
            for child in tmp.iterdir():
                child.rename(out_dir / child.name)
            tmp.rmdir()
        return
    old = _temp_sibling(out_dir, "old")
    old.rmdir()  # only the unique name is wanted: rename needs a free target
    out_dir.rename(old)  # from here to the next line the old dataset is still complete, under `old`
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_dataset(cfg: RunConfig, split: str, out_dir: Path, progress: bool = True) -> BuildSummary:
    """The build_data stage: the recipe's source, size and seed for `split` ("train" or "eval")."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    num = cfg.data.num_train if split == "train" else cfg.data.num_eval
    seed = cfg.data.seed if split == "train" else cfg.data.eval_seed
    return build_records(make_source(cfg), num, seed, out_dir, split=split, progress=progress)


def load_records(data_dir: Path) -> list[dict]:
    path = Path(data_dir) / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RECORDS_FILE} in {data_dir}: is this a built SIF dataset?")
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    return records
