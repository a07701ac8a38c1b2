"""``StandInKubeAPI``: a STAND-IN for a Kubernetes API server (no cluster here), just enough of it for the
real ``kubernetes`` client to create, read and merge-patch InferenceServices in it.

It serves ``/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices[/<name>]`` over HTTP on
localhost: ``dryRun=All`` validates and stores nothing; objects are validated like the API server would
(against the CRD schema when given a CRD folder, else names and quantities); a create of an existing
name is a 409; a patch is a JSON merge patch (RFC 7386) that bumps ``metadata.generation`` when the spec
changes. A stand-in controller marks an object Ready with a URL once it has been read ``ready_after``
times since its last change (never, with ``ready_after=None``); ``reject`` makes it refuse writes as an
admission webhook would. Every request is recorded in ``calls``.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from helpers import send_json

from sifthinker.cluster import crds

_PATH = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?$")


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class StandInKubeAPI:
    def __init__(self, crd_dir: Path | None = None, ready_after: int | None = 1):
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, str, bool]] = []  # (method, name or "", dry run)
        self.reads_since_change: dict[tuple[str, str], int] = {}
        self.crd_dir, self.ready_after, self.reject = crd_dir, ready_after, None
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, obj):
                send_json(self, status, obj)

            def _status(self, code, reason, message):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "reason": reason, "message": message})

            def _route(self, method):
                u = urlparse(self.path)
                m = _PATH.match(u.path)
                dry = parse_qs(u.query).get("dryRun") == ["All"]
                if not m:
                    return self._status(404, "NotFound", f"the server could not find {u.path}")
                ns, name = m.group(1), m.group(2)
                api.calls.append((method, name or "", dry))
                body = None
                if method in ("POST", "PATCH"):
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    if api.reject:
                        return self._status(400, "BadRequest", api.reject)
                with_lock = api._lock
                with with_lock:
                    return getattr(api, f"_{method.lower()}")(self, ns, name, body, dry)

            def do_GET(self):  # noqa: N802
                self._route("GET")

            def do_POST(self):  # noqa: N802
                self._route("POST")

            def do_PATCH(self):  # noqa: N802
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._status(415, "UnsupportedMediaType", self.headers.get("Content-Type"))
                self._route("PATCH")

        self._lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "stand-in", "user": {"token": "stand-in-token"}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
        }))
        return path

    def close(self) -> None:
        self.httpd.shutdown()

    # -- verbs ------------------------------------------------------------------------------------------
    def _problems(self, obj: dict) -> list[str]:
        if self.crd_dir is not None:
            return crds.violations(obj, self.crd_dir)
        return crds.metadata_violations(obj) + crds.quantity_violations(obj)

    def _get(self, h, ns, name, body, dry):
        key = (ns, name)
        if key not in self.objects:
            return h._status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
        obj = self.objects[key]
        self.reads_since_change[key] = self.reads_since_change.get(key, 0) + 1
        if self.ready_after is not None and self.reads_since_change[key] > self.ready_after:
            gen = obj["metadata"]["generation"]
            obj["status"] = {"observedGeneration": gen, "url": f"http://{name}.{ns}.example.com",
                             "conditions": [{"type": "Ready", "status": "True"}]}
        h._send(200, obj)

    def _write(self, h, ns, name, obj, dry, code):
        probs = self._problems(obj)
        if probs:
            return h._status(422, "Invalid", f"InferenceService.serving.kserve.io \"{name}\" is invalid: "
                             + "; ".join(probs))
        if not dry:
            self.objects[(ns, name)] = obj
            self.reads_since_change[(ns, name)] = 0
        h._send(code, obj)

    def _post(self, h, ns, name, body, dry):
        name = body["metadata"]["name"]
        if (ns, name) in self.objects:
            return h._status(409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists')
        obj = copy.deepcopy(body)
        obj["metadata"].update(generation=1, resourceVersion="1", uid=f"uid-{name}")
        obj["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "Creating"}]}
        self._write(h, ns, name, obj, dry, 201)

    def _patch(self, h, ns, name, body, dry):
        if (ns, name) not in self.objects:
            return h._status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
        old = self.objects[(ns, name)]
        obj = merge_patch(old, body)
        if obj.get("spec") != old.get("spec"):
            obj["metadata"]["generation"] = old["metadata"]["generation"] + 1
            obj["status"] = {**old.get("status", {}), "conditions": [{"type": "Ready", "status": "False",
                                                                      "reason": "Updating"}]}
        obj["metadata"]["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 1)
        self._write(h, ns, name, obj, dry, 200)
