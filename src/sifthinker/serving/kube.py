"""Apply an InferenceService with the Kubernetes Python client and wait until it is Ready.

* The client is configured from ``$KUBECONFIG`` / ``~/.kube/config``, else from the pod's service account
  (inside a cluster, e.g. the pipeline's deploy step).
* Create when absent, else patch (a JSON merge patch that also removes the fields the new manifest no
  longer has, so switching runtime or ending a canary leaves nothing behind). Each write runs first as a
  server-side dry run (``dryRun=All``: the CRD schema and admission webhooks judge it) and nothing is
  changed when that fails.
* Then the object is polled until its ``Ready`` condition is ``True`` for the new generation, within a
  timeout; the result carries ``status.url``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from sifthinker.serving.manifest import API_VERSION, DeployError

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "inferenceservices"


@dataclass(frozen=True)
class Applied:
    action: str  # "created" | "patched"
    url: str | None
    generation: int | None


def api_client(config_file: str | None = None) -> Any:
    """A configured ``kubernetes.client.ApiClient``; DeployError saying what to set when there is none."""
    from kubernetes import client, config

    try:  # $KUBECONFIG read now: the client reads it once, when it is imported
        return config.new_client_from_config(config_file=config_file or os.environ.get("KUBECONFIG"))
    except Exception as outside:  # no kubeconfig: maybe we run inside a cluster
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except Exception:
            raise DeployError(f"no Kubernetes configuration: set KUBECONFIG (or run inside a cluster) "
                              f"({' '.join(str(outside).split())[:200]})") from outside


def _message(e: Any) -> str:
    try:
        return json.loads(e.body).get("message") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"


def removal_patch(live: Any, new: Any) -> Any:
    """A JSON merge patch turning ``live`` into ``new``: ``new``'s values, and null for each key of a live
    mapping that ``new`` no longer has (lists are replaced whole, as merge patches do)."""
    if not isinstance(live, dict) or not isinstance(new, dict):
        return new
    out = {k: removal_patch(live.get(k), v) for k, v in new.items()}
    out.update({k: None for k in live if k not in new})
    return out


def apply(manifest: dict, api: Any = None, canary: int | None = None, timeout_s: float = 600.0,
          poll_s: float = 2.0) -> Applied:
    """Create or patch ``manifest`` (dry run first), then wait for Ready (module docstring)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    objects = client.CustomObjectsApi(api or api_client())
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    where = f"InferenceService {ns}/{name}"
    try:
        live = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as e:
        if e.status != 404:
            raise DeployError(f"cannot read {where}: {_message(e)}") from e
        live = None
    if canary is not None and live is None:
        raise DeployError(f"--canary splits traffic with the running version, and {where} does not exist yet: "
                          "deploy it once without --canary")
    try:
        if live is None:
            objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest, dry_run="All")
        else:
            patch = {"metadata": {k: manifest["metadata"][k] for k in ("labels", "annotations")},
                     "spec": removal_patch(live.get("spec") or {}, manifest["spec"])}
            objects.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch, dry_run="All")
    except ApiException as e:
        raise DeployError(f"the cluster rejected {where} in a server-side dry run, nothing applied: "
                          f"{_message(e)}") from e
    try:
        if live is None:
            obj = objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
        else:
            obj = objects.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)
    except ApiException as e:
        raise DeployError(f"applying {where} failed: {_message(e)}") from e
    generation = (obj.get("metadata") or {}).get("generation")
    url = wait_ready(objects, ns, name, generation, timeout_s, poll_s)
    return Applied("created" if live is None else "patched", url, generation)


def wait_ready(objects: Any, ns: str, name: str, generation: int | None, timeout_s: float, poll_s: float) -> str | None:
    """Poll until the Ready condition is True for ``generation``; returns ``status.url``."""
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout_s
    last = "no status yet"
    while True:
        try:
            obj = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as e:
            last = _message(e)
        else:
            status = obj.get("status") or {}
            observed = status.get("observedGeneration")
            ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
            current = generation is None or observed is None or observed >= generation
            if ready and ready.get("status") == "True" and current:
                return status.get("url") or (status.get("address") or {}).get("url")
            if ready:
                last = f"Ready={ready.get('status')}: {ready.get('reason') or ''} {ready.get('message') or ''}".strip()
        if time.monotonic() >= deadline:
            raise DeployError(f"InferenceService {ns}/{name} was applied but is not Ready after {timeout_s:g}s "
                              f"(serving.ready_timeout_s); last: {last}")
        time.sleep(poll_s)
