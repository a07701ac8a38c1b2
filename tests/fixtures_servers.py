"""Real servers for integration tests, started once per session on free localhost ports.

* ``moto_s3``: a moto S3 server (in-process thread) with an empty bucket.
* ``mlflow_server``: a real ``mlflow server`` subprocess, sqlite backend, artifacts proxied to the moto
  bucket (``--artifacts-destination s3://BUCKET``).
* ``tiny_model_dir``: a tiny random Qwen2.5-VL folder (``sifthinker.model.build_tiny_model``), built once.
* ``serving_server``: ``sifthinker serve --model <tiny_model_dir>`` as a subprocess.
* ``shared_limited_server``: the same with small limits (``LIMITED_SERVING``), for the limit, attack and
  fuzz tests.
* ``start_serving(...)``: a context manager starting one more server (a test that kills its server).

Imported by ``conftest.py``. Server logs go to files under the session's tmp dir; a start-up failure
shows their tail.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sifthinker.serving.process import free_port, start_process, stop_process, wait_http

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="session")
def moto_s3():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=S3_BUCKET)
    s3.client().create_bucket(Bucket=S3_BUCKET)
    yield s3
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(moto_s3, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{moto_s3.bucket}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": moto_s3.endpoint}
    proc = start_process(cmd, log, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, log)
        yield MlflowServer(uri=uri, s3=moto_s3, proc=proc, log=log)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL built with the local recipe's shape (once per session)."""
    model = pytest.importorskip("sifthinker.model", reason="sifthinker.model is not in this checkout")
    from sifthinker.config import RunConfig

    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.model.tiny.pretrain_steps = 0  # servers need a model folder, not a skill (test_model covers it)
    root = tmp_path_factory.mktemp("tiny-model")
    corpus = [
        "<think><area>[{\"bbox_2d\":[0,0,1,1],\"depth\":0.5}]</area><text>the whole image</text></think>"
        "<answer>red cube</answer>",
        "Which is closer to the camera, the red cube or the blue sphere? yes no left right 1 2 3",
    ]
    return Path(model.build_tiny_model(cfg, root / "model", corpus))


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


@pytest.fixture(scope="session")
def serving_server(tiny_model_dir, tmp_path_factory):
    """``sifthinker serve`` on the tiny model, as a subprocess on a free port."""
    with start_serving(tiny_model_dir, tmp_path_factory.mktemp("serving"), extra_args=("--max-new-tokens", "24")) as s:
        yield s


_SHARED: dict[str, ServingServer] = {}


def shared_limited_server(request, tiny_model_dir, tmp_path_factory) -> ServingServer:
    """``sifthinker serve`` on the tiny model with ``LIMITED_SERVING``: started by the first test module that
    asks (through its own fixture: conftest only imports the fixtures every test file shares), stopped at
    the end of the session."""
    if "limited" not in _SHARED:
        cm = start_serving(tiny_model_dir, tmp_path_factory.mktemp("limited"), LIMITED_SERVING)
        _SHARED["limited"] = cm.__enter__()
        request.config.add_cleanup(lambda: cm.__exit__(None, None, None))
    return _SHARED["limited"]
