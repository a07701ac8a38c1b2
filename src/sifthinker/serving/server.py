"""The SIFThinker model server: a KServe ``ModelServer`` with our V1/V2 and OpenAI routes.

``serve()`` builds the backend (the model in this process, or with ``predictor_url`` a remote
OpenAI-compatible predictor: the SIF transformer), loads it (the server is ready only once it is loaded),
adds the routes (:mod:`sifthinker.serving.routes`) and the guard (:mod:`sifthinker.serving.observe`) to
KServe's FastAPI app, and runs one uvicorn worker on one HTTP port (no gRPC). KServe keeps health,
readiness, model metadata and ``/metrics``.

Stopping (SIGTERM/SIGINT): the backend is closed first, which cancels every queued and running
generation at its next token, so uvicorn's graceful shutdown does not wait for long generations.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any


def _import_kserve() -> None:
    # kserve.model_server parses sys.argv at import time (argparse.parse_known_args with prefix
    # matching), so our own CLI options would leak into its defaults: import it with a bare argv.
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve  # noqa: F401
        import kserve.model_server  # noqa: F401
    finally:
        sys.argv = saved


_import_kserve()

import kserve  # noqa: E402
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402

from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.serving.kserve_protocol import V2_INPUTS, V2_OUTPUTS  # noqa: E402
from sifthinker.serving.limits import Limits  # noqa: E402
from sifthinker.serving.observe import Guard, Metrics  # noqa: E402
from sifthinker.serving.routes import OPENAI_PREFIX, add_routes  # noqa: E402
from sifthinker.serving.service import Service  # noqa: E402

log = logging.getLogger(__name__)
GRACE_PERIOD_S = 10  # uvicorn's graceful shutdown; generations are cancelled before it starts


class SifthinkerModel(kserve.Model):
    """The served model as KServe sees it: readiness and V2 metadata. Inference goes through our routes."""

    def __init__(self, name: str, service: Service):
        super().__init__(name)
        self.service = service

    def load(self) -> bool:
        self.service.backend.load()
        self.ready = self.service.ready
        return self.ready

    async def healthy(self) -> bool:
        return await self.service.unready_reason() is None

    def get_input_types(self) -> list[dict]:
        return [{"name": n, "datatype": "BYTES", "shape": [-1 if n != "question" else 1]} for n in V2_INPUTS]

    def get_output_types(self) -> list[dict]:
        return [{"name": n, "datatype": "BYTES", "shape": [1]} for n in V2_OUTPUTS]

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        raise InvalidInput(f"use POST /v2/models/{self.name}/infer, /v1/models/{self.name}:predict or "
                           f"{OPENAI_PREFIX}/chat/completions")


# KServe's routes that ours replace (routes.py). Ours come first, but a path ours do not match (a model
# name with a newline) would fall through to KServe's decoder and model repository: they are removed.
_REPLACED = {"/v1/models/{model_name}:predict", "/v1/models/{model_name}:explain", "/v2/models/{model_name}/infer",
             "/v2/models/{model_name}/versions/{model_version}/infer", "/v2/models/{model_name}/versions/{model_version}",
             "/v2/models/{model_name}/versions/{model_version}/ready", "/v2/repository/models/{model_name}/load",
             "/v2/repository/models/{model_name}/unload"}


class _RESTServer(RESTServer):
    """KServe's REST server bound to a chosen interface (KServe always binds 0.0.0.0), without the KServe
    routes ours replace, cancelling the generations in flight when a stop signal arrives."""

    def __init__(self, *args: Any, host: str = "127.0.0.1", on_exit: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config.host = host
        uvicorn_exit = self._server.handle_exit

        def handle_exit(sig: int, frame: Any) -> None:
            on_exit()
            uvicorn_exit(sig, frame)

        self._server.handle_exit = handle_exit  # uvicorn installs self.handle_exit as the signal handler

    def _register_endpoints(self, app: Any) -> None:
        super()._register_endpoints(app)

        def drop(routes: list) -> None:
            routes[:] = [r for r in routes if not (getattr(r, "path", None) in _REPLACED and getattr(
                getattr(r, "endpoint", None), "__module__", "").startswith("kserve"))]
            for r in routes:  # FastAPI keeps an included router as one entry wrapping its routes
                if hasattr(r, "original_router"):
                    drop(r.original_router.routes)

        drop(app.router.routes)

    def _add_exception_handlers(self, app: Any) -> None:
        super()._add_exception_handlers(app)
        from fastapi.responses import JSONResponse
        from kserve.errors import ModelNotFound

        # An unknown model name or bad input on KServe's own routes (metadata, readiness) is the client's
        # mistake: answered as KServe does, but without KServe's traceback per request (a client could
        # flood the log with them; the access log records the request).
        async def not_found(_: Any, exc: Exception) -> Any:
            return JSONResponse(status_code=404, content={"error": str(exc)[:300]})

        async def invalid(_: Any, exc: Exception) -> Any:
            return JSONResponse(status_code=400, content={"error": str(exc)[:300]})

        app.add_exception_handler(ModelNotFound, not_found)
        app.add_exception_handler(InvalidInput, invalid)


class _ModelServer(kserve.ModelServer):
    """One uvicorn worker serving REST; no gRPC."""

    def __init__(self, host: str, service: Service, **kwargs: Any):
        super().__init__(enable_grpc=False, workers=1, grace_period=GRACE_PERIOD_S, **kwargs)
        self._host, self._service = host, service

    def start(self, models: list) -> None:
        import asyncio

        self._register_and_check_atleast_one_model_is_ready(models)
        for alias in self._service.names[1:]:  # V2 metadata/readiness under every name a path can carry
            if "/" not in alias:
                self.register_model(models[0], alias)
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            access_log_format=self.access_log_format, grace_period=self.grace_period, event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive, ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
            host=self._host, on_exit=self._service.close,
        )
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def _access_logging() -> None:
    """The request log: one JSON object per line on stderr, nothing else on the line."""
    logger = logging.getLogger("sifthinker.serving.access")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


# KServe's startup lines about endpoints it did not add: ours serve /openai/v1, so "OpenAI endpoints not
# registered" (true of KServe's own, which need vLLM) misleads; no model here has time-series endpoints.
_MISLEADING = ("OpenAI endpoints not registered", "Time series endpoints not registered")


def _drop(record: logging.LogRecord) -> bool:
    return False


def _not_misleading(record: logging.LogRecord) -> bool:
    return record.getMessage() not in _MISLEADING


def _quiet_kserve_logs() -> None:
    """One log line per request (ours, JSON), not four: uvicorn's access line and KServe's two timing lines
    (wall and CPU) repeat what it holds. Filters on the loggers, because uvicorn and KServe reconfigure
    levels and handlers when they start; ``sifthinker -v`` (DEBUG) keeps everything."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("uvicorn.access", "kserve.trace"):
        logger = logging.getLogger(name)
        if _drop not in logger.filters:
            logger.addFilter(_drop)
    kserve_logger = logging.getLogger("kserve")
    if _not_misleading not in kserve_logger.filters:
        kserve_logger.addFilter(_not_misleading)


def build_service(cfg: RunConfig, model_dir: str | Path | None, name: str, aliases: tuple[str, ...] = (),
                  max_new_tokens: int | None = None, predictor_url: str | None = None,
                  predictor_model: str | None = None) -> Service:
    """The backend (local model, or the remote predictor when ``predictor_url``) behind a Service."""
    from sifthinker.data.depth_providers import make_depth_provider

    limits = Limits.from_config(cfg.serving, max_new_tokens)
    metrics = Metrics.get()
    if predictor_url:
        from sifthinker.serving.transformer import RemoteBackend

        backend: Any = RemoteBackend(predictor_url, predictor_model or name, limits)
    else:
        from sifthinker.serving.local import LocalBackend

        backend = LocalBackend(model_dir, cfg, limits, metrics)
    depth = make_depth_provider(cfg.depth, cache_dir=cfg.path("cache") / "depth")
    service = Service(backend, name, aliases, limits, depth, metrics)
    if hasattr(backend, "incoming"):
        backend.incoming = lambda: service.waiting - backend.batcher.waiting
    return service


def serve(
    model_dir: str | Path | None,
    cfg: RunConfig | None = None,
    name: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    max_new_tokens: int | None = None,
    aliases: tuple[str, ...] = (),
    predictor_url: str | None = None,
    predictor_model: str | None = None,
) -> None:
    """Load the model (or reach the predictor) and serve it until interrupted."""
    from kserve import model_server

    cfg = cfg or RunConfig()
    name = name or cfg.serving.name
    service = build_service(cfg, model_dir, name, aliases, max_new_tokens, predictor_url, predictor_model)
    model = SifthinkerModel(name, service)
    model.load()
    _access_logging()
    _quiet_kserve_logs()
    add_routes(model_server.app, service)
    model_server.app.add_middleware(Guard, max_body_bytes=service.limits.max_body_bytes, metrics=Metrics.get())
    server = _ModelServer(host=host, service=service, http_port=port or cfg.serving.port, enable_docs_url=False)
    what = f"the predictor at {predictor_url}" if predictor_url else str(model_dir)
    log.info("serving %s (%s) on http://%s:%s", name, what, host, server.http_port)
    server.start([model])
