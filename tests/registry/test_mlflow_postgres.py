"""A real MLflow stack, nothing mocked: PostgreSQL (Debian's package, a throw-away cluster started here with
initdb / pg_ctl) as the backend store, moto's S3 server as the artifact store, ``mlflow server`` proxying
artifacts and answering only its --allowed-hosts, as manifests/base/mlflow.yaml runs it. The pipeline's
register step (the component's own body) registers a model, ``sifthinker model promote`` makes it the
champion, and ``sifthinker serve`` serves ``models:/NAME@champion``, fetched through the server from S3,
and answers one OpenAI-style request.

Skips, saying why, without Debian's ``postgresql`` package (.ci/run installs it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env
from sifthinker.serving.process import free_port, start_process, stop_process, wait_http

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

pytestmark = [pytest.mark.slow]  # the `postgres` fixture (tests/conftest.py) skips without PostgreSQL


@pytest.fixture(scope="module")
def mlflow_pg(postgres, moto_s3, tmp_path_factory):
    """`mlflow server` as the manifests run it: schema upgrade first, PostgreSQL, S3, allowed hosts."""
    root = tmp_path_factory.mktemp("mlflow-pg")
    env = {**os.environ, **AWS, "MLFLOW_S3_ENDPOINT_URL": moto_s3.endpoint}
    mlflow = [sys.executable, "-m", "mlflow"]
    subprocess.run([*mlflow, "db", "upgrade", postgres], check=True, capture_output=True, timeout=300, env=env)
    port = free_port()
    cmd = [*mlflow, "server", f"--backend-store-uri={postgres}", f"--artifacts-destination=s3://{moto_s3.bucket}/pg",
           "--serve-artifacts", f"--allowed-hosts=127.0.0.1:{port},localhost:{port}",
           "--host=127.0.0.1", f"--port={port}", "--workers=1"]
    proc = start_process(cmd, root / "server.log", env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, root / "server.log", timeout=300)
        yield uri
    finally:
        stop_process(proc)


def _pg_rows(uri: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(uri) as conn:
        return conn.execute(sql).fetchall()


def _data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_register_promote_and_serve_the_champion_from_postgres_and_s3(mlflow_pg, postgres, moto_s3, tiny_model_dir,
                                                                      tmp_path, monkeypatch):
    import requests
    from kfp.dsl import Model
    from openai import OpenAI

    from components.register.component import register
    from sifthinker.cli import main
    from sifthinker.runtime.stages import recipe_parameter

    # the host check is on: a Host header the server was not told about is refused (DNS rebinding)
    assert requests.get(f"{mlflow_pg}/api/2.0/mlflow/experiments/search?max_results=1",
                        headers={"Host": "evil.example.com"}, timeout=30).status_code in (400, 403)

    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    monkeypatch.setenv(Env.PIPELINE_RUN, "")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)  # the client never touches S3: the server proxies
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.registry.tracking_uri, cfg.registry.model_name = mlflow_pg, "sifthinker-pg"
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    model = Model(uri=str(tmp_path / "model"))
    model.metadata.update({"train_data": "/runs/train", "base_model": "tiny"})

    # 1. the register step, as the pipeline runs it
    name, version, model_uri, source_uri, run_id = register.python_func(
        recipe=recipe_parameter(cfg), pipeline_run="pg-run-1", model=model, metrics_json=json.dumps({"accuracy": 0.5}))
    assert (name, version, model_uri) == ("sifthinker-pg", "1", "models:/sifthinker-pg/1")
    assert _pg_rows(postgres, "SELECT name, version, current_stage FROM model_versions") == [("sifthinker-pg", 1, "None")]
    keys = moto_s3.keys("pg/")
    assert any(re.search(r"/models/m-[0-9a-f]+/artifacts/config.json$", k) for k in keys), keys  # the files are in S3, in the logged model
    assert any(k.endswith(".safetensors") for k in keys), keys

    # 2. promote
    res = CliRunner().invoke(main, ["model", "promote", "sifthinker-pg", "--version", "1", "--tracking-uri", mlflow_pg])
    assert res.exit_code == 0, res.output
    assert _pg_rows(postgres, "SELECT alias, version FROM registered_model_aliases ORDER BY alias") == [
        ("challenger", 1), ("champion", 1)]

    # 3. serve the champion (downloaded through the server from S3) and call it once
    port, log = free_port(), tmp_path / "serve.log"
    env = {**AWS, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", Env.WORK_DIR.value: str(tmp_path / "serve"),
           Env.MODEL_CACHE.value: str(tmp_path / "cache")}
    proc = start_process([sys.executable, "-m", "sifthinker.cli", "serve", "--model", "models:/sifthinker-pg@champion",
                          "--tracking-uri", mlflow_pg, "--recipe", str(REPO / "recipes" / "local.yaml"),
                          "--port", str(port), "--name", "sifthinker-pg", "--max-new-tokens", "8"], log, env=env,
                         cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/models/sifthinker-pg/ready", proc, log, timeout=600)
        rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
        depth = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))).convert("RGB")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/openai/v1", api_key="unused")
        reply = client.chat.completions.create(model="sifthinker-pg", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Which is closer to the camera, the red cube or the blue sphere?"},
            {"type": "image_url", "image_url": {"url": _data_url(rgb)}},
            {"type": "image_url", "image_url": {"url": _data_url(depth)}}]}])
        assert isinstance(reply.choices[0].message.content, str) and reply.model == "sifthinker-pg"
    finally:
        stop_process(proc)
    served = list((tmp_path / "cache").rglob("config.json"))
    assert served, "the server did not fetch the champion into its model cache"
    assert json.loads(served[0].read_text()) == json.loads((tiny_model_dir / "config.json").read_text())
