"""Plain helpers shared by test folders: real servers' handles, data records, recipes, stand-in endpoints,
subprocess commands.

Fixtures live in the conftest.py files; test modules never import each other."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sifthinker.config.run_config import RunConfig
from sifthinker.evaluation.generators import assistant_text
from sifthinker.method import trace as sif
from sifthinker.method.depth import colorize, mean_depth, save_depth_map
from sifthinker.method.prompts import prompt_text
from sifthinker.serving.process import free_port, start_process, stop_process, wait_http
from sifthinker.training.trainjob import build_trainjob, job_files, owner_reference

REPO = Path(__file__).resolve().parents[1]


def send_json(handler: BaseHTTPRequestHandler, status: int, obj: object) -> None:
    """A stand-in HTTP server's JSON answer (``Content-Length`` set, so keep-alive clients read it whole);
    a client that gave up (a timeout) before the answer is not an error of the stand-in."""
    data = json.dumps(obj).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass



# ---- real servers' handles and settings (the fixtures that start them are in conftest.py) ----------------
S3_BUCKET = "sifthinker-artifacts"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@dataclass
class MlflowServer:
    uri: str
    s3: S3Server
    proc: subprocess.Popen
    log: Path


@dataclass
class ServingServer:
    url: str
    model_name: str
    proc: subprocess.Popen
    log: Path
    limits: dict | None = None  # the serving section it was started with, when not the local recipe's


# Small enough that every limit is reachable with small requests, and valid fuzz cases stay fast.
LIMITED_SERVING = {
    "max_new_tokens": 8, "max_tokens_limit": 600, "max_batch_size": 4, "max_batch_wait_ms": 20, "max_queue": 4,
    "max_body_bytes": 1024 * 1024, "max_images": 4, "max_image_pixels": 1_000_000, "max_question_chars": 2000,
    "max_prompt_tokens": 700, "request_timeout_s": 1.5,
}


@contextlib.contextmanager
def start_serving(model: Path | str, root: Path, serving: dict | None = None, name: str = "sifthinker-test",
                  extra_args: tuple[str, ...] = ()):
    """``sifthinker serve`` as a subprocess on a free port (``serving``: recipe ``serving`` keys to change)."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    recipe = REPO / "recipes" / "local.yaml"
    if serving:
        data = yaml.safe_load(recipe.read_text())
        data["serving"] = {**data.get("serving", {}), **serving}
        recipe = root / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(data))
    port = free_port()
    log = root / "serve.log"
    cmd = [sys.executable, "-m", "sifthinker.cli", "serve", "--model", str(model), "--recipe", str(recipe),
           "--port", str(port), "--name", name, *extra_args]
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "SIFTHINKER_WORK_DIR": str(root / "work")}
    proc = start_process(cmd, log, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/models/{name}/ready", proc, log, timeout=300)
        yield ServingServer(url=url, model_name=name, proc=proc, log=log, limits=serving)
    finally:
        stop_process(proc)


# ---- from training/test_training.py -----------------------------------------------------------------
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}
W, H = 160, 120


def make_records(root: Path, n: int = 6) -> list[dict]:
    """n records in the schema of docs/architecture.md: one coloured box per image, exact trace."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        name = list(COLORS)[i % len(COLORS)]
        x1, y1 = int(rng.integers(0, W // 2)), int(rng.integers(0, H // 2))
        x2, y2 = x1 + int(rng.integers(20, W // 2)), y1 + int(rng.integers(20, H // 2))
        img = Image.new("RGB", (W, H), (235, 235, 235))
        ImageDraw.Draw(img).rectangle([x1, y1, x2 - 1, y2 - 1], fill=COLORS[name])
        depth = np.tile(np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None], (1, W))
        box = (round(x1 / W, 3), round(y1 / H, 3), round(x2 / W, 3), round(y2 / H, 3))
        steps = (
            sif.Step((sif.Box(0, 0, 1, 1, round(mean_depth(depth, (0, 0, 1, 1)), 3)),), "I look over the image."),
            sif.Step((sif.Box(*box, round(mean_depth(depth, box), 3)),), f"Here is the {name} box."),
        )
        text = sif.render(sif.Trace(steps, name))
        stem = f"{i:06d}"
        for sub in ("images", "depth"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        img.save(root / f"images/{stem}.png")
        colorize(depth).save(root / f"depth/{stem}.png")
        save_depth_map(root / f"depth/{stem}.npy", depth)
        question = "What colour is the box?"
        records.append({
            "id": f"fixture-{stem}", "dataset": "fixture", "source": "jsonl", "split": "train",
            "category": "attribute", "answer_type": "name",
            "image": f"images/{stem}.png", "depth_image": f"depth/{stem}.png", "depth_map": f"depth/{stem}.npy",
            "width": W, "height": H, "box_frame": "norm", "problem": question, "response": name,
            "normalized_solution_round": {"bbox_3d": [list(box)], "illegal_content": False},
            "messages": [{"role": "user", "content": prompt_text(question)},
                         {"role": "assistant", "content": text}],
            "images": [f"images/{stem}.png", f"depth/{stem}.png"],
        })
    (root / "records.json").write_text(json.dumps(records))
    return records


def make_cfg(tmp_path: Path) -> RunConfig:
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.work_dir = str(tmp_path / "work")
    cfg.registry.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.registry.artifact_root = str(tmp_path / "mlartifacts")
    cfg.model.tiny.hidden_size, cfg.model.tiny.intermediate_size = 32, 64  # fast; same structure
    cfg.model.tiny.pretrain_steps = 0  # the copy pre-training has its own test (test_model)
    return cfg



# ---- from data/test_data_build.py -------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def done(shards: Path) -> list[str]:
    """Finished shards: renamed into place (a hidden temporary folder may hold a shard.json already)."""
    return sorted(p.name for p in shards.iterdir() if not p.name.startswith(".") and (p / "shard.json").is_file())


def data_build_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sifthinker.cli", "data", "build", *args]



# ---- from training/test_preemption.py ---------------------------------------------------------------
FAULTS = pytest.mark.skipif(os.environ.get("SIFTHINKER_FAULT_TESTS") != "1",
                            reason="heavy fault test (trains in subprocesses, minutes): run `make test-faults`")


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIFTHINKER_WORK_DIR", "MLFLOW_TRACKING_URI")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src"), "SIFTHINKER_TORCH_THREADS": "1"}



# ---- from evaluation/test_eval_run.py ---------------------------------------------------------------
class StandInOpenAI:
    """STAND-IN OpenAI-compatible chat server for tests, not a model: answers ``answer(key)`` where
    ``key = ident(request body)``; ``script[key]`` lists what the first requests of that key get: an
    HTTP status (an error reply), or a float (sleep that long first: slower than the client's timeout)."""

    def __init__(self, ident: Callable[[dict], str], answer: Callable[[str], str], *, delay: float = 0.0,
                 script: dict[str, list] | None = None):
        self.ident, self.answer, self.delay = ident, answer, delay
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.counts: Counter[str] = Counter()
        self.bodies: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, obj: dict) -> None:
                send_json(self, code, obj)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "stand-in-model", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "no such route"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = srv.ident(body)
                with srv.lock:
                    srv.counts[key] += 1
                    srv.bodies[key] = body
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                    step = srv.script[key].pop(0) if srv.script.get(key) else None
                try:
                    time.sleep(srv.delay)
                    if isinstance(step, float):
                        time.sleep(step)
                    elif isinstance(step, int):
                        return self._send(step, {"error": {"message": f"scripted {step} for {key}"}})
                    self._send(200, {"object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": srv.answer(key)}}]})
                finally:
                    with srv.lock:
                        srv.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def references(root: Path) -> dict[str, str]:
    return {r["id"]: assistant_text(r) for r in json.loads((root / "records.json").read_text())}


def _image_key(body: dict) -> str:
    url = next(p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url")
    return hashlib.sha256(url.encode()).hexdigest()


def half_right_endpoint(sif_data: Path) -> StandInOpenAI:
    """A slow (0.4 s a request) stand-in endpoint that answers every other item right: the kill-and-rerun
    tests need requests in flight when the signal comes."""
    from sifthinker.serving.openai_api import data_url

    recs = json.loads((sif_data / "records.json").read_text())
    key_of = {hashlib.sha256(data_url(Image.open(sif_data / r["image"]).convert("RGB")).encode()).hexdigest(): r["id"]
              for r in recs}
    refs = references(sif_data)
    answer = {rid: (refs[rid] if i % 2 == 0 else "I am not sure.") for i, rid in enumerate(refs)}
    return StandInOpenAI(lambda body: key_of[_image_key(body)], answer.__getitem__, delay=0.4)


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())



# ---- from training/test_trainjob.py -----------------------------------------------------------------
def gpu_trainjob(tmp_path: Path) -> dict:
    cfg = RunConfig.load(REPO / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml")
    files = job_files(dataclasses.replace(cfg, work_dir=str(tmp_path)), "sifthinker-grpo-sif-abc")
    return build_trainjob(cfg, "grpo-sif", "sifthinker-grpo-sif-abc", "team-a", files, "/workspace/data/train",
                          "/workspace/trainjobs/x/model", pipeline_run="3f2c9a1e-77aa-4c1e-9b1b-0c9d8e7f6a5b",
                          owner=owner_reference())



# ---- from serving/test_serving_transformer.py -------------------------------------------------------
@contextlib.contextmanager
def transformer(root: Path, predictor: str, predictor_model: str):
    port = free_port()
    log = root / "transformer.log"
    cmd = [sys.executable, "-m", "sifthinker.cli", "serve", "--predictor-host", predictor, "--predictor-model",
           predictor_model, "--model_name", "sifthinker", "--http_port", str(port),
           "--recipe", str(REPO / "recipes" / "local.yaml")]
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "SIFTHINKER_WORK_DIR": str(root / "work")}
    proc = start_process(cmd, log, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", proc, log, timeout=300)
        yield url
    finally:
        stop_process(proc)


def random_image(seed=0, size=(64, 48)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))

