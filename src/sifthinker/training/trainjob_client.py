"""Create, find, wait for and follow a Kubeflow ``TrainJob`` through the Kubernetes API.

:class:`TrainJobClient` wraps the ``kubernetes`` client (``CustomObjectsApi`` for the TrainJob,
``CoreV1Api`` for its pods and their logs). ``wait`` polls the job, prints each new condition, the
nodes' scheduling problems (``Unschedulable: 0/4 nodes ...``) and every node's log lines (one thread
per pod, ``[node-0] ...``), and returns when the job is ``Complete``; a ``Failed`` job raises
:class:`TrainJobFailed` with Trainer's reason and message plus what killed the pods (``OOMKilled``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NODE = "node"  # Trainer's name of the trainer replicated job and of its container
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"  # JobSet names a TrainJob's pods after the job
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TRANSIENT = {0, 429, 500, 502, 503, 504}  # 0: no HTTP answer at all (connection reset)

Echo = Callable[[str], None]


class TrainJobError(RuntimeError):
    """The API refused or failed a request about a TrainJob; the message says which and why."""


class TrainJobFailed(TrainJobError):
    """The TrainJob ran and failed; ``reason`` is Trainer's (e.g. ``DeadlineExceeded``, ``FailedJobs``)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


def condition(job: dict, kind: str) -> dict | None:
    """The job's condition of type ``kind`` when its status is True."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def phase(job: dict) -> str:
    """Complete, Failed, Suspended or Running (no terminal condition yet)."""
    for kind in ("Failed", "Complete", "Suspended"):
        if condition(job, kind):
            return kind
    return "Running"


class TrainJobClient:
    def __init__(self, api_client: Any, namespace: str = "default"):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    @classmethod
    def from_environment(cls, context: str | None = None) -> TrainJobClient:
        """In a pod: its service account and namespace; elsewhere: the kube context ($KUBECONFIG)."""
        from kubernetes import client, config

        conf = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and SA_NAMESPACE_FILE.is_file():
            config.load_incluster_config(client_configuration=conf)
            namespace = SA_NAMESPACE_FILE.read_text().strip()
        else:
            try:
                path = os.environ.get("KUBECONFIG")  # read now: the client reads it once, at import
                config.load_kube_config(config_file=path, context=context, client_configuration=conf)
                _, active = config.list_kube_config_contexts(config_file=path)
            except (config.ConfigException, OSError, TypeError) as e:
                raise TrainJobError(f"no Kubernetes API to submit the TrainJob to: not in a pod, and no usable "
                                    f"kube config ({e})") from e
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
        return cls(client.ApiClient(conf), namespace)

    # -- the TrainJob -------------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> dict | None:
        """The job, or None when there is none; transient API errors are retried."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._retry(lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                name), f"read {namespace}/{name}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._error(e, f"read TrainJob {namespace}/{name}") from e

    def create(self, body: dict) -> dict:
        from kubernetes.client.exceptions import ApiException

        md = body["metadata"]
        try:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, md["namespace"], PLURAL, body)
        except ApiException as e:
            raise self._error(e, f"create TrainJob {md['namespace']}/{md['name']}") from e

    def delete(self, namespace: str, name: str, timeout: float = 300.0) -> None:
        """Delete the job (its pods go with it) and wait until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                        propagation_policy="Foreground")
        except ApiException as e:
            if e.status != 404:
                raise self._error(e, f"delete TrainJob {namespace}/{name}") from e
        deadline = time.monotonic() + timeout
        while self.get(namespace, name) is not None:
            if time.monotonic() > deadline:
                raise TrainJobError(f"TrainJob {namespace}/{name} was not gone {timeout:.0f}s after deletion")
            time.sleep(1.0)

    # -- waiting and following ----------------------------------------------------------------------
    def wait(self, namespace: str, name: str, poll_seconds: float = 10.0, echo: Echo = print) -> dict:
        """Follow the job until it is Complete (returned) or Failed (:class:`TrainJobFailed`)."""
        said: set[tuple] = set()
        streams: dict[str, threading.Thread] = {}
        while True:
            job = self.get(namespace, name)
            if job is None:
                raise TrainJobFailed(f"TrainJob {namespace}/{name} was deleted while the step waited for it",
                                     "Deleted")
            for c in (job.get("status") or {}).get("conditions") or []:
                key = (c.get("type"), c.get("status"), c.get("reason"))
                if key not in said:
                    said.add(key)
                    echo(f"TrainJob {name}: {c.get('type')}={c.get('status')} ({c.get('reason')}): "
                         f"{c.get('message', '')}")
            for js in (job.get("status") or {}).get("jobsStatus") or []:
                key = ("jobs", js.get("name"), js.get("active"), js.get("ready"), js.get("succeeded"), js.get("failed"))
                if key not in said:
                    said.add(key)
                    echo(f"TrainJob {name}: {js.get('name')}: {js.get('ready', 0)} ready, {js.get('active', 0)} "
                         f"active, {js.get('succeeded', 0)} succeeded, {js.get('failed', 0)} failed")
            pods = self._pods(namespace, name)
            self._follow(namespace, pods, streams, said, echo)
            state = phase(job)
            if state in ("Complete", "Failed"):
                for t in streams.values():
                    t.join(timeout=30)  # the last lines of the logs come before the verdict
            if state == "Complete":
                return job
            if state == "Failed":
                c = condition(job, "Failed") or {}
                why = f"{c.get('reason') or 'Failed'}: {c.get('message') or 'no message'}"
                killed = "; ".join(_terminations(self._pods(namespace, name)))
                raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {why}" + (f" ({killed})" if killed else ""),
                                     c.get("reason", ""))
            time.sleep(poll_seconds)

    def _pods(self, namespace: str, name: str) -> list[Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return list(self._retry(lambda: self.core.list_namespaced_pod(
                namespace, label_selector=f"{JOBSET_LABEL}={name}"), f"list the pods of {name}").items)
        except ApiException as e:  # logs and scheduling hints are a courtesy: never fail the wait for them
            if e.status in (401, 403):
                return []
            raise

    def _follow(self, namespace: str, pods: list[Any], streams: dict[str, threading.Thread], said: set[tuple],
                echo: Echo) -> None:
        for pod in pods:
            tag = _tag(pod)
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and (key := ("sched", tag, c.message)) not in said:
                    said.add(key)
                    echo(f"[{tag}] not scheduled ({c.reason}): {c.message}")
            if pod.metadata.name not in streams and pod.status.phase in ("Running", "Succeeded", "Failed"):
                t = threading.Thread(target=self._stream, args=(namespace, pod.metadata.name, tag, echo), daemon=True)
                streams[pod.metadata.name] = t
                t.start()

    def _stream(self, namespace: str, pod: str, tag: str, echo: Echo) -> None:
        """Every log line of the pod's trainer container, prefixed with its node, until the container ends."""
        try:
            resp = self.core.read_namespaced_pod_log(pod, namespace, container=NODE, follow=True,
                                                     _preload_content=False)
            with contextlib.closing(resp):
                for raw in resp:
                    echo(f"[{tag}] {raw.decode(errors='replace').rstrip()}")
        except Exception as e:  # a broken log stream must not break the wait
            echo(f"[{tag}] (log stream ended: {type(e).__name__}: {str(e).strip().splitlines()[:1]})")

    # -- errors -------------------------------------------------------------------------------------
    @staticmethod
    def _retry(call: Callable[[], Any], what: str, attempts: int = 5) -> Any:
        """``call()``, retried with backoff on transient failures (API server restarts, throttling)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for i in range(attempts):
            try:
                return call()
            except ApiException as e:
                if e.status not in _TRANSIENT or i == attempts - 1:
                    raise
            except HTTPError as e:
                if i == attempts - 1:
                    raise TrainJobError(f"could not {what}: {type(e).__name__}: {e}") from e
            time.sleep(min(2.0 ** i, 30.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _error(e: Any, what: str) -> TrainJobError:
        import json

        try:
            message = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            message = e.reason
        hint = {403: " (the step's service account needs create/get/delete on trainjobs.trainer.kubeflow.org: "
                     "manifests/base/rbac.yaml)",
                404: " (is Kubeflow Trainer installed? its CRDs serve trainjobs.trainer.kubeflow.org)"}.get(e.status, "")
        return TrainJobError(f"could not {what}: HTTP {e.status}: {message}{hint}")


def _tag(pod: Any) -> str:
    index = (pod.metadata.labels or {}).get(INDEX_LABEL)
    return f"{NODE}-{index}" if index is not None else pod.metadata.name


def _terminations(pods: list[Any]) -> list[str]:
    """What ended each failed trainer container: ``node-1: OOMKilled (exit 137)``."""
    out = []
    for pod in pods:
        for cs in pod.status.container_statuses or []:
            term = cs.state.terminated if cs.state else None
            if term and (term.exit_code or 0) != 0:
                out.append(f"{_tag(pod)}: {term.reason or 'Error'} (exit {term.exit_code})")
    return out
