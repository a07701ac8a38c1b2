"""`make demo`: the whole local journey a user takes, in one command.

Runs the KFP pipeline locally, promotes the registered challenger to champion, starts the KServe server on
`models:/NAME@champion`, asks one question about a new synthetic scene with the `openai` client, prints the
answer and the trace, saves the image with the focus boxes drawn, stops the server, and says where to look.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from PIL import Image

from sifthinker.config import RunConfig
from sifthinker.depth import colorize
from sifthinker.serving.openai_api import data_url
from sifthinker.serving.process import free_port, serve_subprocess

DEMO_SCENE_SEED = 987_654  # far from the train and eval seeds: a scene the model has never seen


def stage_metrics(cfg: RunConfig, pipeline_run: str) -> dict[str, dict]:
    """Latest metrics (and GRPO's reward history) of this pipeline run's stages, read back from MLflow."""
    import mlflow
    from mlflow import MlflowClient

    from sifthinker.tracking import PIPELINE_RUN_TAG, STAGE_TAG, configure

    exp_id = configure(cfg)
    client = MlflowClient(cfg.tracking_uri)
    runs = mlflow.search_runs([exp_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}'",
                              output_format="list")
    out: dict[str, dict] = {}
    for run in runs:
        stage = run.data.tags.get(STAGE_TAG, "?")
        info = {"run_id": run.info.run_id, "metrics": dict(run.data.metrics)}
        if stage == "grpo-sif":
            key = next((k for k in ("reward", "train/reward") if k in run.data.metrics), None)
            if key:
                info["reward_history"] = [m.value for m in client.get_metric_history(run.info.run_id, key)]
        out[stage] = info
    return out


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


def run_demo(recipe: Path, port: int | None = None) -> int:
    from sifthinker import registry
    from sifthinker.orchestration import run_local
    from sifthinker.scenes import generate_items
    from sifthinker.visualize import save_trace_png

    t0 = time.monotonic()
    cfg = RunConfig.load(recipe)
    os.environ.setdefault("SIFTHINKER_PIPELINE_RUN", f"demo-{uuid.uuid4().hex[:8]}")
    pipeline_run = os.environ["SIFTHINKER_PIPELINE_RUN"]
    print(f"== 1/4 pipeline: running {cfg.name} locally (pipeline run {pipeline_run})", flush=True)
    result = run_local(cfg)
    stages = stage_metrics(cfg, pipeline_run)
    ev = stages.get("evaluate", {}).get("metrics", {})
    rewards = stages.get("grpo-sif", {}).get("reward_history", [])
    print(f"   held-out: format validity {ev.get('format_validity', float('nan')):.3f}, "
          f"accuracy {ev.get('accuracy', float('nan')):.3f}, grounding Acc@0.5 {ev.get('grounding_acc50', float('nan')):.3f}, "
          f"depth consistency {ev.get('depth_consistency', float('nan')):.3f}")
    if rewards:
        print(f"   GRPO mean reward per step: {' '.join(f'{r:.2f}' for r in rewards)}")
    if not getattr(result, "gate_passed", False):
        print(f"gate failed, nothing registered: {getattr(result, 'gate_failures', '')}")
        return 1

    name = cfg.registry.model_name
    from mlflow import MlflowClient

    version = MlflowClient(cfg.tracking_uri).get_model_version_by_alias(name, "challenger").version
    print(f"== 2/4 registry: promoting {name} version {version} (challenger) to champion", flush=True)
    registry.promote(cfg, name, version, alias="champion")

    out_dir = cfg.path("demo")
    scene, q = next(generate_items(1, DEMO_SCENE_SEED, width=cfg.data.width, height=cfg.data.height))
    image, depth_image = Image.fromarray(scene.rgb), colorize(scene.depth)
    port = port or free_port()
    print(f"== 3/4 serving: KServe model server on port {port} with models:/{name}@champion", flush=True)
    with serve_subprocess(f"models:/{name}@champion", recipe, port, out_dir / "server.log") as (base, _):
        reply = ask(base, name, image, depth_image, q.question, cfg.serving.max_new_tokens)
    print("== 4/4 answer")
    print(f"   question: {q.question}\n   expected: {q.answer}\n   answer:   {reply['sif'].get('answer')}")
    print(f"   format valid: {reply['sif'].get('format_valid')}")
    print("   trace:\n" + "\n".join("     " + line for line in (reply["text"] or "").splitlines()))
    png = save_trace_png(image, reply["text"] or "", out_dir / "answer.png", title=q.question,
                         depth_image=depth_image)
    print(f"\nfocus boxes drawn on the image: {png}")
    print(f"done in {time.monotonic() - t0:.0f}s. Next: `make mlflow-ui` and open http://127.0.0.1:5000 "
          f"(experiment '{cfg.registry.experiment}', model '{name}'); "
          f"`sifthinker pipeline compile --recipe recipes/qwen2.5-vl-7b-8gpu.yaml -o pipeline.yaml` for a cluster.")
    return 0
