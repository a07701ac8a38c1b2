"""The SIFThinker model server: a KServe ``ModelServer`` with the V2 protocol and an OpenAI chat route.

* V2 (``POST /v2/models/<name>/infer``): inputs ``image`` and ``depth_image`` (``BYTES``, shape [1],
  base64 PNG/JPEG text; a data URL or raw image bytes through the binary extension also work) and
  ``question`` (``BYTES``, shape [1]); optional request ``parameters`` ``max_tokens`` (alias
  ``max_new_tokens``) and ``temperature``. Outputs ``text`` (the full generation), ``answer`` (the
  answer, empty when none) and ``trace`` (JSON text of ``{"steps": [...] | null, "format_valid",
  "problems"}``), each ``BYTES`` of shape [1].
* OpenAI (``POST /openai/v1/chat/completions``, ``GET /openai/v1/models``): see
  :mod:`sifthinker.serving.openai_api`. KServe's own OpenAI routes need a vLLM-backed model, so these
  are added to KServe's FastAPI app directly.

One request is one generation: requests are served one at a time by a single generation worker (the
event loop stays free for health checks); batching several requests into one ``generate`` call is a
later concern. Client errors are 4xx with a JSON message, never 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from PIL import Image


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
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING  # noqa: E402
from kserve.errors import InferenceError, InvalidInput  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402

from sifthinker.config import RunConfig  # noqa: E402
from sifthinker.serving import openai_api as oa  # noqa: E402

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/openai/v1"
V2_INPUTS = ("image", "depth_image", "question")
V2_OUTPUTS = ("text", "answer", "trace")


class SifthinkerModel(kserve.Model):
    """A SIFThinker VLM behind KServe: ``load()`` reads the model folder, ``predict()`` answers V2 requests."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        cfg: RunConfig | None = None,
        max_new_tokens: int | None = None,
        aliases: tuple[str, ...] = (),
    ):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.cfg = cfg
        self.max_new_tokens = int(max_new_tokens or (cfg.serving.max_new_tokens if cfg else 256))
        self.aliases = tuple(a for a in aliases if a and a != name)
        self._model = None
        self._processor = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    def load(self) -> bool:
        from sifthinker.model import load_model

        log.info("loading %s from %s", self.name, self.model_dir)
        self._model, self._processor = load_model(self.model_dir, self.cfg)
        self.ready = True
        return self.ready

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    # -- generation --------------------------------------------------------------------------------
    def generate_text(
        self, question: str, image: Image.Image, depth_image: Image.Image, max_new_tokens: int, temperature: float
    ) -> str:
        """One generation (blocking; one at a time)."""
        from sifthinker.model.inference import GenRequest, generate

        if not self.ready:
            raise RuntimeError(f"model {self.name} is not loaded")
        req = GenRequest(image=image, depth_image=depth_image, question=question)
        with self._lock:
            (text,) = generate(self._model, self._processor, [req], max_new_tokens, temperature=temperature)
        return text

    async def agenerate(self, *args: Any) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.generate_text, *args)

    def count_tokens(self, text: str) -> int | None:
        tok = getattr(self._processor, "tokenizer", self._processor)
        try:
            return len(tok(text, add_special_tokens=False)["input_ids"])
        except Exception:  # token counts are informative only
            return None

    # -- V2 ----------------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict]:
        return [{"name": n, "datatype": "BYTES", "shape": [1]} for n in V2_INPUTS]

    def get_output_types(self) -> list[dict]:
        return [{"name": n, "datatype": "BYTES", "shape": [1]} for n in V2_OUTPUTS]

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput(
                "this model speaks the V2 protocol (POST /v2/models/<name>/infer) and the OpenAI chat route "
                "(POST /openai/v1/chat/completions); the V1 protocol is not supported"
            )
        try:
            question, image, depth, max_tokens, temperature = self._parse_v2(payload)
        except oa.RequestError as e:
            raise InvalidInput(e.message) from e
        text = await self.agenerate(question, image, depth, max_tokens, temperature)
        sif = oa.sif_summary(text)
        trace = {"steps": sif["trace"], "format_valid": sif["format_valid"], "problems": sif["problems"]}
        outputs = [
            InferOutput("text", [1], "BYTES", [text]),
            InferOutput("answer", [1], "BYTES", [sif["answer"] or ""]),
            InferOutput("trace", [1], "BYTES", [json.dumps(trace)]),
        ]
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs
        )

    def _parse_v2(self, req: InferRequest) -> tuple[str, Image.Image, Image.Image, int, float]:
        by_name: dict[str, Any] = {}
        for inp in req.inputs:
            if inp.name not in V2_INPUTS:
                raise oa.RequestError(f"unknown input {inp.name!r}; expected {', '.join(V2_INPUTS)}")
            if inp.datatype != "BYTES":
                raise oa.RequestError(f"input {inp.name!r} must have datatype BYTES, got {inp.datatype}")
            values = _flat(inp.data)
            if len(values) != 1:
                raise oa.RequestError(
                    f"input {inp.name!r} has {len(values)} elements; the server answers one item per request "
                    "(shape [1])"
                )
            by_name[inp.name] = values[0]
        missing = [n for n in V2_INPUTS if n not in by_name]
        if missing:
            raise oa.RequestError(f"missing input(s): {', '.join(missing)}")
        image = _v2_image(by_name["image"], "input 'image'")
        depth = _v2_image(by_name["depth_image"], "input 'depth_image'")
        q = by_name["question"]
        question = oa.strip_instruction(q.decode("utf-8", "replace") if isinstance(q, bytes) else str(q))
        if not question:
            raise oa.RequestError("input 'question' is empty")
        params = dict(req.parameters or {})
        body = {"max_tokens": params.get("max_tokens", params.get("max_new_tokens")), "temperature": params.get("temperature")}
        body = {k: _param_value(v) for k, v in body.items()}
        max_tokens = body["max_tokens"]
        if max_tokens is None:
            max_tokens = self.max_new_tokens
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 < max_tokens <= oa.MAX_TOKENS_LIMIT:
            raise oa.RequestError(f"parameter max_tokens must be an integer in [1, {oa.MAX_TOKENS_LIMIT}], got {max_tokens!r}")
        t = body["temperature"]
        t = 0.0 if t is None else t
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 2:
            raise oa.RequestError(f"parameter temperature must be a number in [0, 2], got {t!r}")
        return question, image, depth, max_tokens, float(t)


def _flat(data: Any) -> list:
    if data is None:
        return []
    if hasattr(data, "tolist"):
        data = data.tolist()
    if isinstance(data, list | tuple):
        return [x for d in data for x in _flat(d)]
    return [data]


def _param_value(v: Any) -> Any:
    # REST parameters are plain JSON values; gRPC ones are InferParameter messages.
    for attr in ("int64_param", "double_param", "bool_param", "string_param"):
        if hasattr(v, "HasField") and v.HasField(attr):
            return getattr(v, attr)
    return v


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")


def _v2_image(value: Any, what: str) -> Image.Image:
    if isinstance(value, bytes) and value.startswith(_IMAGE_MAGIC):  # raw bytes (binary extension)
        return oa.decode_image_bytes(value, what)
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    if text.startswith("data:"):
        return oa.decode_data_url(text, what)
    return oa.decode_image_bytes(oa.decode_base64(text, what), what)


# ---- OpenAI routes ---------------------------------------------------------------------------------
def _error(e: oa.RequestError) -> JSONResponse:
    return JSONResponse(e.to_json(), status_code=e.status)


def add_openai_routes(app: FastAPI, model: SifthinkerModel) -> None:
    """``POST /openai/v1/chat/completions`` and ``GET /openai/v1/models`` on KServe's FastAPI app."""

    async def chat_completions(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(oa.RequestError(f"Content-Type must be application/json, got {ctype or 'none'!r}", 415))
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return _error(oa.RequestError(f"the request body is not valid JSON: {e}"))
        try:
            req = oa.parse_chat_request(body, model.max_new_tokens)
        except oa.RequestError as e:
            return _error(e)
        if req.model and req.model not in model.served_names:
            return _error(
                oa.RequestError(
                    f"model {req.model!r} is not served here; available: {', '.join(model.served_names)}",
                    404,
                    "model",
                    "model_not_found",
                )
            )
        if not model.ready:
            return JSONResponse({"error": {"message": "model is not ready", "type": "server_error"}}, 503)
        text = await model.agenerate(req.question, req.image, req.depth_image, req.max_tokens, req.temperature)
        n = model.count_tokens(text)
        finish = "length" if n is not None and n >= req.max_tokens else "stop"
        return JSONResponse(oa.chat_completion(text, model.name, finish_reason=finish))

    async def list_models() -> JSONResponse:
        return JSONResponse(oa.model_list(list(model.served_names)))

    app.add_api_route(f"{OPENAI_PREFIX}/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route(f"{OPENAI_PREFIX}/models", list_models, methods=["GET"])


# ---- server ----------------------------------------------------------------------------------------
async def _inference_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """KServe reports undecodable V2 request bytes (e.g. raw non-UTF-8 BYTES through the binary
    extension) as an InferenceError, i.e. a 500; they are client errors. Everything else stays a 500."""
    from kserve.errors import inference_error_handler

    if "Failed to encode" in str(exc) or "Unrecognized request format" in str(exc):
        return JSONResponse(
            {"error": f"{exc} (send BYTES inputs as base64 text: see the model metadata)"}, status_code=400
        )
    return await inference_error_handler(request, exc)


class _RESTServer(RESTServer):
    """KServe's REST server bound to a chosen interface (KServe always binds 0.0.0.0), with V2 decoding
    failures reported as 400."""

    def __init__(self, *args: Any, host: str = "127.0.0.1", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config.host = host

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(InferenceError, _inference_error_handler)


class _ModelServer(kserve.ModelServer):
    """One uvicorn worker serving REST (V2 + the routes added to KServe's app); no gRPC."""

    def __init__(self, host: str, **kwargs: Any):
        super().__init__(enable_grpc=False, workers=1, **kwargs)
        self._host = host

    def start(self, models: list) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            host=self._host,
        )
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def serve(
    model_dir: str | Path,
    cfg: RunConfig | None = None,
    name: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    max_new_tokens: int | None = None,
    aliases: tuple[str, ...] = (),
) -> None:
    """Load the model and serve it until interrupted (V2 + OpenAI routes on one HTTP port; no gRPC)."""
    from kserve import model_server

    cfg = cfg or RunConfig()
    model = SifthinkerModel(
        name or cfg.serving.name, model_dir, cfg, max_new_tokens=max_new_tokens, aliases=aliases
    )
    model.load()
    add_openai_routes(model_server.app, model)
    server = _ModelServer(host=host, http_port=port or cfg.serving.port, enable_docs_url=False)
    log.info("serving %s on http://%s:%s (V2 and %s)", model.name, host, server.http_port, OPENAI_PREFIX)
    server.start([model])
