"""The HTTP routes: OpenAI chat (plain and streamed), OpenAI models, KServe V1 and V2 inference.

They are added to KServe's FastAPI app before KServe adds its own, so these handlers answer
``/v1/models/<name>:predict`` and ``/v2/models/<name>/infer`` (KServe's decoder turned malformed input
into 500s) while KServe keeps health, readiness, metadata and ``/metrics``. Every route accepts the
served name and its aliases (:attr:`Service.names`) and answers with the served name. The model
repository extension (load/unload over HTTP) is refused: a client must not be able to unload the model.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from sifthinker.serving import kserve_protocol as kp
from sifthinker.serving import openai_api as oa
from sifthinker.serving.errors import RequestError, limit_error, retry_headers
from sifthinker.serving.limits import parse_json
from sifthinker.serving.service import Service

OPENAI_PREFIX = "/openai/v1"


def _info(request: Request) -> dict:
    return request.scope.setdefault("state", {}).setdefault("sif", {})


def _guarded(openai_style: bool, retry_after_s: float = 5.0):
    """Turn a RequestError into its JSON reply (OpenAI's nested error, or KServe's flat one); a 429 or 503
    carries ``Retry-After``."""

    def wrap(handler):
        @functools.wraps(handler)
        async def inner(request: Request, *args: Any, **kwargs: Any):
            try:
                return await handler(request, *args, **kwargs)
            except RequestError as e:
                info = _info(request)
                info["error"] = e.message[:300]
                if e.limit:
                    info["limit"] = e.limit
                body = e.to_json()
                if not openai_style:
                    body = {"error": e.message, **{k: v for k, v in body["error"].items()
                                                   if k in ("code", "param", "limit") and v}}
                return JSONResponse(body, status_code=e.status, headers=retry_headers(e.status, retry_after_s))

        return inner

    return wrap


async def _body(request: Request, json_only: bool = True) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if json_only and ctype not in ("application/json", ""):
        raise RequestError(f"Content-Type must be application/json, got {ctype[:60]!r}", 415)
    return await request.body()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def add_routes(app: FastAPI, service: Service) -> None:
    limits = service.limits

    @_guarded(openai_style=True, retry_after_s=limits.retry_after_s)
    async def chat_completions(request: Request):
        info = _info(request)
        body = parse_json(await _body(request))
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            service.check_model(body["model"])  # a wrong name is a 404 before any other complaint (no images...)
        ask = oa.parse_chat_request(body, limits)
        service.check_model(ask.model)
        info["model"] = service.name
        if ask.stream:
            prepared, handle, deadline = await service.start(ask, info)
            return StreamingResponse(_stream(service, ask, prepared, handle, deadline, info),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        prepared, result = await service.complete(ask, request, info)
        sif = await service.sif(result.text, prepared, ask.draw)
        return JSONResponse(oa.chat_completion(result.text, service.name, result.finish_reason,
                                               result.prompt_tokens, result.completion_tokens, sif))

    async def list_models():
        return JSONResponse(oa.model_list(list(service.names)))

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def v2_infer(request: Request, model_name: str):
        service.check_model(model_name)
        info = _info(request)
        info["model"] = service.name
        raw = await _body(request, json_only=False)
        ask, rid, outputs = kp.parse_v2(raw, request.headers.get(kp.HEADER_LENGTH), limits)
        service.check_model(ask.model)
        prepared, result = await service.complete(ask, request, info)
        sif = await service.sif(result.text, prepared, ask.draw)
        return JSONResponse(kp.v2_response(service.name, rid, result.text, sif, outputs))

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def v1_predict(request: Request, model_name: str):
        service.check_model(model_name)
        info = _info(request)
        info["model"] = service.name
        asks = kp.parse_v1(await _body(request), limits)

        async def one(ask: Any) -> dict:
            prepared, result = await service.complete(ask, request, {})
            sif = await service.sif(result.text, prepared, ask.draw)
            return {"text": result.text, "answer": sif["answer"], "sif": sif}

        tasks = [asyncio.ensure_future(one(a)) for a in asks]
        try:
            predictions = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        return JSONResponse({"predictions": list(predictions)})

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def server_ready(request: Request):
        # KServe's own says ready once the model is loaded; a transformer is ready only while its predictor is
        await _check_ready(service)
        return JSONResponse({"ready": True})

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def model_ready(request: Request, model_name: str):
        service.check_model(model_name)
        await _check_ready(service)
        return JSONResponse({"name": service.name, "ready": True})

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def refuse_explain(request: Request, model_name: str):
        raise RequestError("explanations are not supported by this model", 404, code="not_supported")

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def refuse_version(request: Request, model_name: str, model_version: str):
        raise RequestError("model versions are not served separately: use /v2/models/<name>", 404,
                           code="not_supported")

    @_guarded(openai_style=False, retry_after_s=limits.retry_after_s)
    async def refuse_repository(request: Request, model_name: str):
        raise RequestError("the model repository extension is disabled: models cannot be loaded or unloaded over "
                           "HTTP", 403, code="repository_disabled")

    app.add_api_route(f"{OPENAI_PREFIX}/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route(f"{OPENAI_PREFIX}/models", list_models, methods=["GET"])
    app.add_api_route("/v2/models/{model_name:path}/infer", v2_infer, methods=["POST"])
    app.add_api_route("/v1/models/{model_name:path}:predict", v1_predict, methods=["POST"])
    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/ready", model_ready, methods=["GET"])
    app.add_api_route("/v1/models/{model_name:path}:explain", refuse_explain, methods=["POST"])
    for tail in ("", "/ready"):  # KServe answers these with 501 (NotImplementedError)
        app.add_api_route(f"/v2/models/{{model_name}}/versions/{{model_version}}{tail}", refuse_version,
                          methods=["GET"])
    for verb in ("load", "unload"):
        app.add_api_route(f"/v2/repository/models/{{model_name:path}}/{verb}", refuse_repository, methods=["POST"])


async def _check_ready(service: Service) -> None:
    problem = await service.unready_reason()
    if problem:
        raise RequestError(problem, 503, code="not_ready")


async def _stream(service: Service, ask: Any, prepared: Any, handle: Any, deadline: float,
                  info: dict) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format; the last content chunk carries ``sif``, then the
    usage chunk (``stream_options.include_usage``) and ``[DONE]``. A failure after the first byte (a
    timeout) is an ``error`` event: the status line has been sent already."""
    cid, created = oa.completion_id(), int(time.time())
    finished = False
    try:
        yield _sse(oa.chunk(cid, service.name, created, {"role": "assistant", "content": ""}))
        while True:
            left = deadline - time.monotonic()
            try:
                delta = await asyncio.wait_for(handle.deltas.get(), max(0.0, left) + 2)
            except TimeoutError as e:
                raise limit_error("request_timeout_s", "the request took longer than the server's request timeout",
                                  408) from e
            if delta is None:
                break
            yield _sse(oa.chunk(cid, service.name, created, {"content": delta}))
        result = await handle.future
        finished = True
        service.record(info, result)
        sif = await service.sif(result.text, prepared, ask.draw)
        yield _sse(oa.chunk(cid, service.name, created, {}, result.finish_reason, sif=sif))
        if ask.include_usage:
            yield _sse(oa.chunk(cid, service.name, created, None,
                                usage=oa.usage(result.prompt_tokens, result.completion_tokens)))
        yield "data: [DONE]\n\n"
    except RequestError as e:
        info["error"] = e.message[:300]
        yield _sse(e.to_json())
        yield "data: [DONE]\n\n"
    finally:  # also when the client went away mid-stream (the generator is closed)
        if not finished:
            handle.cancel("client disconnected")
