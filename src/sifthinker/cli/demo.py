"""`make demo`: the whole local journey a user takes, in one command.

Runs the pipeline (``run_pipeline``: the KFP local runner, passed in by the Kubeflow layer so that the
library does not import it), promotes the registered challenger to champion, starts the KServe server on
``models:/NAME@champion``, asks one question about a new synthetic scene with the ``openai`` client,
saves the image with the focus boxes drawn, stops the server, and closes with a summary.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from sifthinker.config.run_config import RunConfig
from sifthinker.method.depth import colorize
from sifthinker.names import Env
from sifthinker.runtime.console import Console
from sifthinker.serving.openai_api import data_url
from sifthinker.serving.process import free_port, serve_subprocess

DEMO_SCENE_SEED = 987_654  # far from the train and eval seeds: a scene the model has never seen

# run_pipeline(cfg) -> an object with gate_passed, gate_failures, registered ({"version", ...}), metrics
PipelineRunner = Callable[[RunConfig], Any]


def ask(base_url: str, model_name: str, image: Image.Image, depth_image: Image.Image, question: str,
        max_tokens: int) -> dict:
    """One question through the OpenAI-compatible route, with the `openai` client a user would use."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/openai/v1", api_key="not-needed-locally")
    reply = client.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "image_url", "image_url": {"url": data_url(depth_image)}},
        ]}],
        max_tokens=max_tokens,
        temperature=0.0,
    )
    extra = getattr(reply, "model_extra", None) or {}
    return {"text": reply.choices[0].message.content, "sif": extra.get("sif", {})}


def run_demo(recipe: Path, run_pipeline: PipelineRunner, console: Console, port: int | None = None,
             log_path: Path | None = None) -> int:
    """The demo; ``console`` gets the lines a person reads (stage lines come from the stage console)."""
    from sifthinker.method.visualize import save_trace_png
    from sifthinker.registry import model_versions
    from sifthinker.scenes import generate_items

    t0 = time.monotonic()
    cfg = RunConfig.load(recipe)
    os.environ.setdefault(Env.PIPELINE_RUN, f"demo-{uuid.uuid4().hex[:8]}")
    pipeline_run = os.environ[Env.PIPELINE_RUN]
    console.line(f"SIFThinker demo, recipe {cfg.name}, pipeline run {pipeline_run}")
    if log_path:
        console.line(f"full log: {log_path}")
    console.line("1/4 pipeline: KFP local runner, one process per step")
    result = run_pipeline(cfg)
    if not result.gate_passed:
        console.line(f"gate failed, nothing registered: {'; '.join(result.gate_failures)}")
        return 1

    name, version = cfg.registry.model_name, str(result.registered["version"])
    t = time.monotonic()
    model_versions.promote(cfg, name, version, alias=model_versions.CHAMPION)
    console.line(f"2/4 registry: {name} version {version} promoted challenger -> champion "
                 f"({time.monotonic() - t:.1f}s)")

    out_dir = cfg.path("demo")
    scene, q = next(generate_items(1, DEMO_SCENE_SEED, width=cfg.data.width, height=cfg.data.height))
    image, depth_image = Image.fromarray(scene.rgb), colorize(scene.depth)
    port = port or free_port()
    t = time.monotonic()
    with serve_subprocess(f"models:/{name}@champion", recipe, port, out_dir / "server.log") as (base, _):
        console.line(f"3/4 serving: KServe model server on {base} with models:/{name}@champion "
                     f"(ready in {time.monotonic() - t:.1f}s)")
        t = time.monotonic()
        reply = ask(base, name, image, depth_image, q.question, cfg.serving.max_new_tokens)
    sif = reply["sif"]
    console.line(f"4/4 answer via the openai client ({time.monotonic() - t:.1f}s): {sif.get('answer')!r}, "
                 f"expected {q.answer!r}, format {'valid' if sif.get('format_valid') else 'invalid'}")
    png = save_trace_png(image, reply["text"] or "", out_dir / "answer.png", title=q.question,
                         depth_image=depth_image)

    m = result.metrics
    console.line("")
    console.line(f"done in {time.monotonic() - t0:.0f}s")
    console.line(f"  held-out     format validity {m.get('format_validity', float('nan')):.3f}, "
                 f"accuracy {m.get('accuracy', float('nan')):.3f}, "
                 f"grounding Acc@0.5 {m.get('grounding_acc50', float('nan')):.3f}, "
                 f"depth consistency {m.get('depth_consistency', float('nan')):.3f}")
    others = sorted(k.split("/")[0] for k in m if k.endswith("/overall") and not k.startswith("sif-bench/"))
    if others:
        console.line("  benchmarks   " + ", ".join(f"{b} {m[f'{b}/overall']:.3f} ({int(m.get(f'{b}/n', 0))} items)"
                                                   for b in others))
    console.line(f"  model        models:/{name}/{version} (aliases challenger, champion)")
    console.line(f"  question     {q.question}")
    console.line("  trace        " + " ".join((reply["text"] or "").split())[:300])
    console.line(f"  focus boxes  {png}")
    if log_path:
        console.line(f"  full log     {log_path}")
    console.line(f"  next         `make mlflow-ui` then http://127.0.0.1:5000 (experiment "
                 f"'{cfg.registry.experiment}'); `sifthinker pipeline compile --recipe "
                 "recipes/qwen2.5-vl-7b-8gpu.yaml -o pipeline.yaml` for a cluster")
    return 0
