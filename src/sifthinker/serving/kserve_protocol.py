"""KServe's V1 and V2 inference protocols for the SIFThinker model, parsed strictly (no KServe decoder).

V2 (``POST /v2/models/<name>/infer``), JSON or with the binary-data extension
(``Inference-Header-Content-Length``):

* inputs, all ``BYTES``: ``question`` (1 element), ``image`` (N elements: the RGB image(s)), optional
  ``depth_image`` (0 or N elements; without it the depth provider makes them). An image element is base64
  text, a ``data:`` URL, or (binary extension) the raw PNG/JPEG/WebP bytes.
* request ``parameters``: ``max_tokens`` (alias ``max_new_tokens``), ``temperature``, ``draw``;
  ``model_name`` in the body (KServe's client sends it) must be a served name too.
* outputs (all, or those ``outputs`` names): ``text``, ``answer``, ``trace`` (JSON text
  ``{"steps", "format_valid", "problems"}``) and ``sif`` (JSON text of the full ``sif`` object), each
  ``BYTES`` of shape [1], always as JSON.

V1 (``POST /v1/models/<name>:predict``): ``{"instances": [{"question", "image": str | [str],
"depth_image"?: str | [str]}], "parameters"?: {...}}`` -> ``{"predictions": [{"text", "answer", "sif"}]}``;
up to ``serving.max_batch_size`` instances, generated together.

Everything a client can get wrong (a non-numeric or too large header length, binary sizes that do not
add up, shapes that do not match the data, unknown inputs or parameters) is a 400 naming it.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

from sifthinker.serving import request as rq
from sifthinker.serving.errors import RequestError, limit_error, short
from sifthinker.serving.limits import Limits, check_image_count, check_question, parse_json

V2_INPUTS = ("image", "depth_image", "question")
V2_OUTPUTS = ("text", "answer", "trace", "sif")
HEADER_LENGTH = "inference-header-content-length"
_PARAMS = {"max_tokens", "max_new_tokens", "temperature", "draw", "binary_data_output"}
_DIGITS = re.compile(r"^[0-9]{1,12}$")


def _gen_params(params: Any, where: str, limits: Limits) -> tuple[int, float, bool]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RequestError(f"{where} must be an object", param=where)
    rq.check_keys(params, _PARAMS, where)
    if rq.bool_param(params.get("binary_data_output"), f"{where}.binary_data_output"):
        raise RequestError("binary_data_output=true is not supported: outputs are JSON", param=where)
    mt, mnt = params.get("max_tokens"), params.get("max_new_tokens")
    if mt is not None and mnt is not None and mt != mnt:
        raise RequestError("max_tokens and max_new_tokens disagree; send one", param=f"{where}.max_tokens")
    max_tokens = rq.max_tokens_param(mt if mt is not None else mnt, f"{where}.max_tokens", limits)
    return max_tokens, rq.temperature_param(params.get("temperature"), f"{where}.temperature"), \
        rq.bool_param(params.get("draw"), f"{where}.draw")


def _question(value: Any, what: str, limits: Limits) -> str:
    from sifthinker.serving.openai_api import strip_instruction

    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise RequestError(f"{what} must be text, got {short(value)}", param=what)
    check_question(value, limits, what)
    question = strip_instruction(value)
    if not question:
        raise RequestError(f"{what} is empty", param=what)
    return question


# ---- V2 -------------------------------------------------------------------------------------------------
def _flat(data: Any) -> list:
    """Row-major elements of (nested) V2 data; the depth was checked when the JSON was read."""
    out, stack = [], [data]
    while stack:
        d = stack.pop()
        if isinstance(d, list):
            stack.extend(reversed(d))
        else:
            out.append(d)
    return out


def _shape_size(shape: Any, where: str) -> int:
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31
                                              for s in shape):
        raise RequestError(f"{where}.shape must be a list of non-negative integers, got {short(shape)}", param=where)
    return math.prod(shape)


def _split_bytes_tensor(raw: bytes, where: str) -> list[bytes]:
    """The binary extension's BYTES serialisation: each element a 4-byte little-endian length, then the bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise RequestError(f"{where}: binary BYTES data ends inside an element length", param=where)
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise RequestError(f"{where}: a binary BYTES element of {n} bytes runs past binary_data_size",
                               param=where)
        out.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def split_v2_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a V2 body; the binary part is empty without the extension header."""
    if header_length is None:
        return body, b""
    if not _DIGITS.match(header_length.strip()):
        raise RequestError(f"the Inference-Header-Content-Length header must be a byte count, got "
                           f"{short(header_length)}", param="Inference-Header-Content-Length")
    n = int(header_length)
    if n > len(body):
        raise RequestError(f"Inference-Header-Content-Length is {n} but the body has only {len(body)} bytes",
                           param="Inference-Header-Content-Length")
    return body[:n], body[n:]


def parse_v2(body: bytes, header_length: str | None, limits: Limits) -> tuple[rq.Ask, str | None, list[str]]:
    """A V2 infer body -> (Ask, request id, output names)."""
    json_part, binary = split_v2_body(body, header_length)
    req = parse_json(json_part)
    if not isinstance(req, dict):
        raise RequestError("the V2 request must be a JSON object with 'inputs'")
    rq.check_keys(req, {"id", "model_name", "parameters", "inputs", "outputs"}, "request")
    rid, model = req.get("id"), req.get("model_name")  # KServe's client also names the model in the body
    for key, v in (("id", rid), ("model_name", model)):
        if v is not None and not isinstance(v, str):
            raise RequestError(f"{key} must be a string", param=key)
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs must be a non-empty list", param="inputs")
    values: dict[str, list] = {}
    offset = 0
    for k, inp in enumerate(inputs):
        where = f"inputs[{k}]"
        if not isinstance(inp, dict):
            raise RequestError(f"{where} must be an object", param=where)
        rq.check_keys(inp, {"name", "shape", "datatype", "parameters", "data"}, where)
        name = inp.get("name")
        if name not in V2_INPUTS:
            raise RequestError(f"unknown input {short(name)}; expected {', '.join(V2_INPUTS)}", param=where)
        if name in values:
            raise RequestError(f"input {name!r} is given twice", param=where)
        if inp.get("datatype") != "BYTES":
            raise RequestError(f"input {name!r} must have datatype BYTES, got {short(inp.get('datatype'))}",
                               param=where)
        size = _shape_size(inp.get("shape"), where)
        params = inp.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(f"{where}.parameters must be an object", param=where)
        rq.check_keys(params, {"binary_data_size"}, f"{where}.parameters")
        nbytes = params.get("binary_data_size")
        if nbytes is not None:
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
                raise RequestError(f"{where}.parameters.binary_data_size must be a byte count", param=where)
            if "data" in inp:
                raise RequestError(f"input {name!r} has both data and binary_data_size", param=where)
            if offset + nbytes > len(binary):
                raise RequestError(f"input {name!r} declares {nbytes} binary bytes but only "
                                   f"{len(binary) - offset} follow the JSON header", param=where)
            data = _split_bytes_tensor(binary[offset : offset + nbytes], where)
            offset += nbytes
        elif "data" in inp:
            data = _flat(inp["data"])
        else:
            raise RequestError(f"input {name!r} has no data", param=where)
        if len(data) != size:
            raise RequestError(f"input {name!r} has shape {inp.get('shape')} but {len(data)} element(s)", param=where)
        values[name] = data
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} binary bytes after the JSON header belong to no input "
                           "(binary_data_size values must add up to the binary part)")
    missing = [n for n in ("image", "question") if n not in values]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(missing)}", param="inputs")
    if len(values["question"]) != 1:
        raise RequestError(f"input 'question' has {len(values['question'])} elements; the server answers one "
                           "question per request (shape [1])", param="inputs")
    ask = _ask(values["image"], values.get("depth_image", []), values["question"][0], req.get("parameters"),
               "input", limits)
    ask.model = model
    return ask, rid, _outputs(req.get("outputs"))


def _outputs(spec: Any) -> list[str]:
    if spec is None:
        return list(V2_OUTPUTS)
    if not isinstance(spec, list) or not spec:
        raise RequestError("outputs must be a non-empty list of {\"name\": ...}", param="outputs")
    names = []
    for k, o in enumerate(spec):
        if not isinstance(o, dict) or o.get("name") not in V2_OUTPUTS:
            raise RequestError(f"outputs[{k}] must name one of {', '.join(V2_OUTPUTS)}", param=f"outputs[{k}]")
        rq.check_keys(o, {"name", "parameters"}, f"outputs[{k}]")
        p = o.get("parameters") or {}
        if not isinstance(p, dict) or p.get("binary_data") not in (None, False) or set(p) - {"binary_data"}:
            raise RequestError(f"outputs[{k}].parameters: only binary_data=false is supported (outputs are JSON)",
                               param=f"outputs[{k}]")
        names.append(o["name"])
    return names


def _ask(images: list, depth: list, question: Any, params: Any, where: str, limits: Limits) -> rq.Ask:
    if not images:
        raise RequestError(f"{where} 'image' has no elements", param="image")
    if depth and len(depth) != len(images):
        raise RequestError(f"{len(images)} image(s) but {len(depth)} depth image(s): send one depth image per "
                           "image, or none (the depth provider makes them)", param="depth_image")
    check_image_count(len(images), limits, "image")
    max_tokens, temperature, draw = _gen_params(params, "parameters", limits)
    rgb = [rq.ImageRef(v, f"image {i + 1}", "image") for i, v in enumerate(images)]
    dep = [rq.ImageRef(v, f"depth image {i + 1}", "depth_image") for i, v in enumerate(depth)]
    return rq.Ask(_question(question, "question", limits), rgb, dep, max_tokens, temperature, draw=draw)


def v2_response(model: str, rid: str | None, text: str, sif: dict, outputs: list[str]) -> dict:
    import json

    trace = {"steps": sif["trace"], "format_valid": sif["format_valid"], "problems": sif["problems"]}
    values = {"text": text, "answer": sif["answer"] or "", "trace": json.dumps(trace), "sif": json.dumps(sif)}
    return {"model_name": model, "id": rid or "",
            "outputs": [{"name": n, "shape": [1], "datatype": "BYTES", "data": [values[n]]} for n in outputs]}


# ---- V1 -------------------------------------------------------------------------------------------------
def parse_v1(body: bytes, limits: Limits) -> list[rq.Ask]:
    req = parse_json(body)
    if not isinstance(req, dict):
        raise RequestError("the V1 request must be a JSON object with 'instances'")
    rq.check_keys(req, {"instances", "parameters"}, "request")
    inst = req.get("instances")
    if not isinstance(inst, list) or not inst:
        raise RequestError("instances must be a non-empty list", param="instances")
    if len(inst) > limits.max_batch_size:
        raise limit_error("max_batch_size", f"{len(inst)} instances, more than {limits.max_batch_size}", 400,
                          "instances")
    asks = []
    for k, it in enumerate(inst):
        where = f"instances[{k}]"
        if not isinstance(it, dict):
            raise RequestError(f"{where} must be an object with question and image", param=where)
        rq.check_keys(it, {"question", "image", "depth_image"}, where)
        imgs, dep = it.get("image"), it.get("depth_image")
        imgs = imgs if isinstance(imgs, list) else [] if imgs is None else [imgs]
        dep = dep if isinstance(dep, list) else [] if dep is None else [dep]
        if "question" not in it:
            raise RequestError(f"{where} has no question", param=where)
        asks.append(_ask(imgs, dep, it["question"], req.get("parameters"), where, limits))
    return asks
