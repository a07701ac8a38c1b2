"""`make cluster-local`: the cluster path on one machine, one line per stage, torn down at the end.

The registry, the images built and pushed there (``make images ... PUSH=1``), PostgreSQL + the MLflow
server + S3 (``sifthinker.cluster.local_platform``), the benchmark data a recipe names on ``s3://`` put there
from the checkout's fixtures, the whole compiled pipeline with every step in its own container
(:func:`pipelines.run.run_pipeline_in_containers`: environment from the secrets only), the registered
version promoted to champion, the serve image started as the rendered InferenceService's container, and
one question asked with the ``openai`` client. Whatever happens (a failure, Ctrl-C, SIGTERM), what was
started is torn down.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sifthinker.cluster.local_platform import LocalPlatform, image_registry
from sifthinker.config.run_config import RunConfig
from sifthinker.runtime.console import Console, StageConsole

REPO = Path(__file__).resolve().parents[1]
# What the journey runs: the pipeline image, the serve image, and the two services'.
IMAGES = ("sifthinker", "sifthinker-serve-cpu", "sifthinker-mlflow", "sifthinker-postgres")
# Where a recipe's s3:// benchmark data comes from on this machine: the checkout's fixtures (a site keeps
# its benchmarks in its object store; here they are put there first).
FIXTURES = REPO / "tests" / "fixtures" / "benchmarks"


@dataclass
class ClusterLocalResult:
    run: Any  # pipelines.run.LocalRunResult
    model: str
    version: str
    ready_s: float
    reply: dict[str, Any]
    expected: str
    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # image -> the digest the registry serves and the engine runs


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the teardown runs (a CI job's cancel, `kill`)."""
    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _build(registry: str, tag: str, docker: str) -> None:
    """``make images`` for :data:`IMAGES`, pushed; the caller's make variables (BASES, CA_BUNDLE,
    TORCH_INDEX_URL, BUILD_FLAGS) reach it through the environment (MAKEFLAGS)."""
    argv = ["make", "-s", "-C", str(REPO), "images", f"IMAGES={' '.join(IMAGES)}", f"IMAGE_REGISTRY={registry}",
            f"IMAGE_TAG={tag}", "PUSH=1", f"DOCKER={docker}"]
    last: collections.deque[str] = collections.deque(maxlen=3)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:  # to the log as it comes (a first build takes many minutes)
            print(line, end="", flush=True)
            if line.strip():
                last.append(line.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"make images failed: {' | '.join(last)}")


def local_images(cfg: RunConfig, registry: str, tag: str) -> RunConfig:
    """``cfg`` with its images from ``registry`` (e.g. ``127.0.0.1:5055/sifthinker``): the pipeline image for
    every step, the CPU serve image for the InferenceService (the dev overlay's choice: no GPU here)."""
    return dataclasses.replace(
        cfg, platform=dataclasses.replace(cfg.platform, image=f"{registry}/sifthinker:{tag}"),
        serving=dataclasses.replace(cfg.serving, runtime_image=f"{registry}/sifthinker-serve-cpu:{tag}"))


def cluster_local(cfg: RunConfig, console: Console, state_dir: Path, registry: str, tag: str, build: bool = True,
                  docker: str | None = None,
                  check: Callable[[LocalPlatform, ClusterLocalResult], None] | None = None) -> ClusterLocalResult:
    """The journey of the module docstring for ``cfg``, with the images of ``registry`` (a registry on
    127.0.0.1, e.g. ``127.0.0.1:5055/sifthinker``) and ``tag``; ``build=False`` uses the images already
    in the registry. ``check`` is called with the platform and the result before the teardown (a test
    reads the MLflow server and S3 there)."""
    from PIL import Image

    from pipelines.run import host_events, run_pipeline_in_containers
    from sifthinker.cli.demo import DEMO_SCENE_SEED, ask
    from sifthinker.method.depth import colorize
    from sifthinker.registry import model_versions as model_registry
    from sifthinker.scenes import generate_items
    from sifthinker.serving.process import free_port

    docker = docker or os.environ.get("DOCKER", "docker")
    cfg = local_images(cfg, registry, tag)
    _, repo = image_registry(cfg.platform.image)
    seconds: dict[str, float] = {}
    t_all = time.monotonic()
    with _sigterm_as_interrupt(), LocalPlatform(repo, tag, state_dir, docker=docker) as plat:
        t = time.monotonic()
        console.line(f"1/7 {plat.start_registry()}")
        if build:
            _build(repo, tag, docker)
            seconds["images"] = time.monotonic() - t
            console.line(f"2/7 images built and pushed to {repo} ({', '.join(IMAGES)}; {seconds['images']:.0f}s)")
        else:
            console.line(f"2/7 images: using those in {repo} (no build)")
        images = {}
        for image in (cfg.platform.image, cfg.serving.runtime_image):  # what the steps and the server run
            images[image] = plat.pull(image)
            console.line(f"    {image}: {images[image]}")
        t = time.monotonic()
        console.line(f"3/7 services: {plat.start_services()} ({time.monotonic() - t:.0f}s)")
        for b in cfg.eval.benchmarks:  # the recipe's s3:// benchmark data, from the checkout's fixtures
            if b.data and b.data.startswith("s3://") and (FIXTURES / b.name).is_dir():
                n = plat.upload(FIXTURES / b.name, b.data)
                console.line(f"    put {n} files of {b.name} to {b.data}")
        root = state_dir / "pipeline_root"
        console.line(f"4/7 pipeline: kfp DockerRunner, every step in {cfg.platform.image} as uid 1000")
        t = time.monotonic()
        with StageConsole(host_events(root), console):
            result = run_pipeline_in_containers(cfg, root, plat.secrets())
        seconds["pipeline"] = time.monotonic() - t
        console.line(f"    {len(result.tasks)} steps in {seconds['pipeline']:.0f}s")
        if not result.gate_passed:
            raise RuntimeError(f"gate failed, nothing registered: {'; '.join(result.gate_failures)}")
        name, version = cfg.registry.model_name, str(result.registered["version"])
        model_registry.promote(plat.mlflow_uri, name, version, alias=model_registry.CHAMPION)
        console.line(f"5/7 registry: {name} version {version} promoted challenger -> champion on {plat.mlflow_uri}")
        manifest = yaml.safe_load(Path(result.deployment["result"]["path"]).read_text())
        image = manifest["spec"]["predictor"]["containers"][0]["image"]
        with plat.serve(manifest, free_port()) as (base, ready_s):
            console.line(f"6/7 serving: {image} as the InferenceService's container, ready in {ready_s:.1f}s ({base})")
            scene, q = next(generate_items(1, DEMO_SCENE_SEED, width=cfg.data.width, height=cfg.data.height))
            t = time.monotonic()
            reply = ask(base, name, Image.fromarray(scene.rgb), colorize(scene.depth), q.question,
                        cfg.serving.max_new_tokens)
        sif = reply["sif"]
        console.line(f"7/7 answer via the openai client ({time.monotonic() - t:.1f}s): {sif.get('answer')!r}, "
                     f"expected {q.answer!r}, format {'valid' if sif.get('format_valid') else 'invalid'}")
        out = ClusterLocalResult(run=result, model=name, version=version, ready_s=ready_s, reply=reply,
                                 expected=q.answer, seconds=seconds, images=images)
        if check:
            check(plat, out)
        console.line("tearing down what was started")
    seconds["total"] = time.monotonic() - t_all
    console.line(f"done in {seconds['total']:.0f}s (pipeline {seconds['pipeline']:.0f}s); everything started is stopped")
    return out


def summary_json(res: ClusterLocalResult) -> str:
    return json.dumps({"model": res.model, "version": res.version, "ready_s": res.ready_s, "seconds": res.seconds,
                       "answer": res.reply["sif"].get("answer"), "expected": res.expected}, indent=1)
