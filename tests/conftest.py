"""Fixtures every test folder may use. Real servers, started once per session on free localhost ports:

* ``moto_s3``: a moto S3 server (in-process thread) with an empty bucket;
* ``mlflow_server``: a real ``mlflow server`` subprocess, sqlite backend, artifacts proxied to the moto bucket;
* ``tiny_model_dir``: a tiny random Qwen2.5-VL folder, built once;
* ``serving_server``: ``sifthinker serve --model <tiny_model_dir>`` as a subprocess;
* ``postgres``: a throw-away PostgreSQL cluster (Debian's initdb / pg_ctl) for MLflow's backend store.

Server logs go to files under the session's tmp dir; a start-up failure shows their tail. Plain helpers
(the servers' handles, ``start_serving``, records, recipes) are in helpers.py."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import AWS_ENV, S3_BUCKET, MlflowServer, S3Server, start_serving

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env
from sifthinker.serving.process import free_port, start_process, stop_process, wait_http

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _mlflow_s3_endpoint_restored():
    """sifthinker.storage.s3_endpoint.export_for_mlflow sets MLFLOW_S3_ENDPOINT_URL for the rest of the process (a
    step's whole life); a test that sets an S3 endpoint must not leave it to the next test."""
    before = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    yield
    if before is None:
        os.environ.pop("MLFLOW_S3_ENDPOINT_URL", None)
    else:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = before


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The KServe/Kubeflow CRD YAMLs: ``$CRD_DIR`` (as CI sets it), else ``../shared/crds`` beside the
    checkout. Only tests may look there; the product reads ``CRD_DIR`` alone. Skips without either."""
    if env := os.environ.get(Env.CRD_DIR):
        return Path(env).resolve()
    beside = REPO.parent / "shared" / "crds"
    if beside.is_dir():
        return beside.resolve()
    pytest.skip(f"CRD schemas not available: set {Env.CRD_DIR} to a folder of CRD YAMLs (or put them in {beside})")


@pytest.fixture
def bad_recipes(tmp_path) -> dict[str, tuple[Path, str]]:
    """Recipes that must not load, with a word the error must contain."""
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: x\ndata:\n  num_train: [1,\n")
    negative = tmp_path / "negative.yaml"
    negative.write_text("data:\n  num_train: -5\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data:\n  num_trian: 5\n")
    return {"malformed": (malformed, "malformed.yaml:"), "negative": (negative, "recipe.data.num_train"),
            "unknown": (unknown, "num_trian"), "missing": (tmp_path / "nope.yaml", "nope.yaml")}


@pytest.fixture
def no_ambient_aws(monkeypatch, tmp_path):
    """A step pod's view of AWS, shared by the cluster-YAML and S3-endpoint tests: only what the pod's environment
    says, no AWS variables, config files or instance metadata."""
    import os

    for k in list(os.environ):
        if k.startswith(("AWS_", "MLFLOW_S3_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture(scope="module")
def sif_data(tmp_path_factory) -> Path:
    """A small real SIF-Bench folder: `sifthinker data build`'s eval split (6 records)."""
    from sifthinker.data.build import build_dataset

    cfg = RunConfig()
    cfg.data.num_eval = 6
    root = tmp_path_factory.mktemp("sif-bench") / "eval"
    build_dataset(cfg, "eval", root, progress=False)
    return root


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """A recipe with the fake depth provider (no weights) and quick endpoint settings; work dir in tmp."""
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("depth:\n  provider: fake-gradient\neval:\n  concurrency: 3\n  retries: 2\n"
                      "  request_timeout_s: 1.0\n  num_render: 2\n  batch_size: 4\n")
    return recipe


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


@pytest.fixture
def s3(moto_s3, monkeypatch):
    """The moto server as this process's S3 (credentials and ``AWS_ENDPOINT_URL`` in the environment)."""
    for k, v in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_s3.endpoint}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return moto_s3


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
    from sifthinker.config.run_config import RunConfig

    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.model.tiny.pretrain_steps = 0  # servers need a model folder, not a skill (test_model covers it)
    root = tmp_path_factory.mktemp("tiny-model")
    corpus = [
        "<think><area>[{\"bbox_2d\":[0,0,1,1],\"depth\":0.5}]</area><text>the whole image</text></think>"
        "<answer>red cube</answer>",
        "Which is closer to the camera, the red cube or the blue sphere? yes no left right 1 2 3",
    ]
    return Path(model.build_tiny_model(cfg, root / "model", corpus))


@pytest.fixture(scope="session")
def serving_server(tiny_model_dir, tmp_path_factory):
    """``sifthinker serve`` on the tiny model, as a subprocess on a free port."""
    with start_serving(tiny_model_dir, tmp_path_factory.mktemp("serving"), extra_args=("--max-new-tokens", "24")) as s:
        yield s


# ---- MLflow's backend on a real PostgreSQL (registry/test_mlflow_postgres.py, training/test_tracking_outage.py)
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root (CI, containers) run it as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster in a temp folder, on a free port, with a password-protected `mlflow` database.
    Skips, saying why, without Debian's ``postgresql`` package (.ci/run installs it)."""
    if not PG_BIN:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
    bin_dir = PG_BIN[-1].parent
    root = Path(tempfile.mkdtemp(prefix="sifthinker-pg-"))  # not under pytest's root-only tmp folder
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pwfile = root / "pw"
    pwfile.write_text("s3cret-pg\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "mlflow",
                                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"]), **run)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-o", opts,
                                 "-l", str(root / "server.log"), "-w", "start"]), **run)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="mlflow", password="s3cret-pg", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow:s3cret-pg@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
