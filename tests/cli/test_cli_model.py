"""`sifthinker model ...` failures: one line ``Error: ...``, no traceback, and no store created by a read."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sifthinker.cli import main
from sifthinker.serving.process import free_port

REPO = Path(__file__).resolve().parents[2]
MODEL = "sif-cli"


def _error_line(res: Result, exit_code: int, *words: str) -> str:
    """The single ``Error:`` line of a failed command, after checking it failed the expected way."""
    out = res.output
    assert res.exit_code == exit_code, out
    # a crash would leave its exception here (CliRunner swallows the traceback) ...
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    # ... and the group's catch-all for unexpected exceptions points at -v: an expected error does not
    assert "Traceback" not in out and "sifthinker -v" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert lines == errors, out  # one line, usage errors (exit 2) included: no usage block
    for w in words:
        assert w in errors[0], out
    return errors[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A sqlite store holding model MODEL with version 1 (made directly: no training run needed)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("cli-model")
    (root / "model").mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, source=str(root / "model"), run_id=None)
    return uri


@pytest.fixture
def missing_db(tmp_path) -> Path:
    return tmp_path / "nowhere" / "x.db"


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["model", *args])


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5"])
def test_promote_version_must_be_a_positive_integer(bad, missing_db):
    res = _run("promote", MODEL, "--version", bad, "--tracking-uri", f"sqlite:///{missing_db}")
    _error_line(res, 2, "--version", bad)
    assert not missing_db.parent.exists()


@pytest.mark.parametrize("args", [
    ["list", MODEL],
    ["promote", MODEL, "--version", "1"],
    ["resolve", f"models:/{MODEL}@champion"],
    ["resolve", f"models:/{MODEL}/1"],
])  # fmt: skip
def test_reading_a_missing_sqlite_store_creates_nothing(args, missing_db):
    res = _run(*args, "--tracking-uri", f"sqlite:///{missing_db}")
    _error_line(res, 1, f"no MLflow store at {missing_db}", "does not exist")
    assert not missing_db.exists() and not missing_db.parent.exists()


def test_recipe_store_missing_is_reported_not_created(tmp_path, monkeypatch):
    # the local recipe's default store is <work>/mlflow.db
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = _run("list", MODEL, "--recipe", str(REPO / "recipes" / "local.yaml"))
    _error_line(res, 1, f"no MLflow store at {tmp_path / 'work' / 'mlflow.db'}")
    assert not (tmp_path / "work").exists()


def test_promote_unknown_version_or_model(store):
    res = _run("promote", MODEL, "--version", "9", "--tracking-uri", store)
    _error_line(res, 1, f"model '{MODEL}' has no version 9", "(versions: 1)")
    res = _run("promote", "nope", "--version", "1", "--tracking-uri", store)
    _error_line(res, 1, "no registered model named 'nope'")
    res = _run("list", "nope", "--tracking-uri", store)
    _error_line(res, 1, "no registered model named 'nope'")
    res = _run("resolve", f"models:/{MODEL}/7", "--tracking-uri", store)
    _error_line(res, 1, f"models:/{MODEL}/7 does not exist")
    res = _run("resolve", f"models:/{MODEL}@champion", "--tracking-uri", store)  # no alias set yet
    _error_line(res, 1, f"models:/{MODEL}@champion does not exist")
    # the store still works after the failures: the version is listed, the alias can be set
    res = _run("promote", MODEL, "--version", "1", "--tracking-uri", store)
    assert res.exit_code == 0 and res.output.strip() == f"{MODEL}@champion: version none -> 1", res.output


def test_unreachable_tracking_server_fails_fast():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["list", MODEL], ["promote", MODEL, "--version", "1"], ["resolve", f"models:/{MODEL}@champion"]):
        t0 = time.monotonic()
        res = _run(*args, "--tracking-uri", uri)
        _error_line(res, 1, f"tracking server at {uri} is unreachable")
        assert time.monotonic() - t0 < 60  # not MLflow's minutes of retries (a hang guard, not a speed test)


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"<html>\n<body>upstream down</body>\n</html>")

    def log_message(self, *args):
        pass


def test_failing_tracking_server_is_not_retried_for_minutes(monkeypatch):
    # a server that answers 503 (an ingress whose MLflow pod is down): MLflow alone retries for minutes
    for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        t0 = time.monotonic()
        res = _run("list", MODEL, "--tracking-uri", uri)
        elapsed = time.monotonic() - t0
    finally:
        server.shutdown()
    _error_line(res, 1, f"the MLflow registry at {uri} failed", "503")
    assert elapsed < 60  # a hang guard, not a speed test
    # the fail-fast settings were for that command only
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


@pytest.mark.parametrize("kind", ["missing", "malformed", "unknown", "negative"])
@pytest.mark.parametrize("args", [
    ["list", MODEL], ["promote", MODEL, "--version", "1"], ["resolve", f"models:/{MODEL}@champion"],
])  # fmt: skip
def test_bad_recipe_is_one_line(args, kind, bad_recipes):
    path, words = bad_recipes[kind]
    _error_line(_run(*args, "--recipe", str(path)), 1, words)
