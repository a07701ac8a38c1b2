"""Render every kustomize overlay and check what it would apply, offline (``make manifests``).

    python manifests/validate.py [OVERLAY_DIR ...]      # default: every folder in manifests/overlays

For each overlay: ``kubectl kustomize`` renders it; built-in kinds are validated with kubernetes-validate
(strict: unknown fields are errors) for Kubernetes ``K8S_VERSION``; custom resources (InferenceService,
ServingRuntime, ClusterTrainingRuntime, ...) against their CRD schemas in ``$CRD_DIR`` (sifthinker.cluster.crds;
skipped, saying so, without it); then the house policy (:func:`policy_violations`). Exit status 1 lists
every violation of every overlay.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sifthinker.cluster import crds

HERE = Path(__file__).resolve().parent
K8S_VERSION = "1.32.0"  # the oldest Kubernetes the manifests target (Kubeflow Trainer and KServe need >= 1.31)
OUR_REGISTRY = "ghcr.io/sifthinker/"
# Env var names that carry credentials: their values must come from a secret, never be written inline.
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|ACCESS_KEY|ACCESS_KEY_ID|PRIVATE_KEY)($|_)")
URI_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterTrainingRuntime",
                  "ClusterServingRuntime", "CustomResourceDefinition", "StorageClass"}
# Containers allowed a writable root file system, each with its reason. Empty: every container here
# runs read-only, writing only to its mounted volumes.
WRITABLE_ROOT: dict[tuple[str, str], str] = {}


@dataclass
class Report:
    overlay: str
    docs: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)


def render(overlay: Path) -> list[dict]:
    kubectl = os.environ.get("KUBECTL", "kubectl")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {out.stderr.strip()}")
    return crds.load_documents(out.stdout)


def _name(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod template in ``doc``; an InferenceService predictor and a
    ServingRuntime spec are pod specs too (their containers, volumes, securityContext)."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield "spec.template.spec", spec.get("template", {}).get("spec", {})
    elif kind == "InferenceService":
        for comp in ("predictor", "transformer", "explainer"):
            if comp in spec:
                yield f"spec.{comp}", spec[comp]
    elif kind in ("ServingRuntime", "ClusterServingRuntime"):
        yield "spec", spec
    elif kind in ("TrainingRuntime", "ClusterTrainingRuntime"):
        for i, rj in enumerate(spec.get("template", {}).get("spec", {}).get("replicatedJobs", [])):
            yield f"spec.template.spec.replicatedJobs[{i}]", rj["template"]["spec"]["template"]["spec"]


def _containers(pod: dict) -> Iterator[tuple[str, dict]]:
    for key in ("initContainers", "containers"):
        for c in pod.get(key) or []:
            yield f"{key}[{c.get('name')}]", c


def _core_validator(api_version: str, kind: str, version: str) -> Any | None:
    """kubernetes-validate's strict schema for a built-in kind (None: not built in), as a validator that
    reports every error, not only the first (kubernetes_validate.validate stops at one)."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{utils.major_minor(version)}.0-local-strict"
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    defs = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def core_violations(docs: list[dict], version: str = K8S_VERSION) -> tuple[list[str], int]:
    """Built-in kinds against Kubernetes' own schemas (strict: unknown fields are errors); custom kinds
    are left to their CRDs."""
    probs, n = [], 0
    for doc in docs:
        validator = _core_validator(doc.get("apiVersion", ""), doc.get("kind", ""), version)
        if validator is None:
            continue
        n += 1
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            where = ".".join(str(p) for p in e.absolute_path) or "<root>"
            probs.append(f"{_name(doc)}: {where}: {e.message}")
    return probs, n


def crd_violations(docs: list[dict], crd_dir: Path) -> tuple[list[str], int]:
    known = set(crds.known_kinds(crd_dir))
    probs, n = [], 0
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in known:
            n += 1
            probs += [f"{_name(doc)}: {p}" for p in crds.violations(doc, crd_dir)]
    return probs, n


def _image_problems(image: str) -> list[str]:
    if "@sha256:" in image:
        return []
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return [f"image {image!r} has no tag (means latest)"]
    if tag == "latest":
        return [f"image {image!r} uses the latest tag"]
    return []


def _container_problems(c: dict, pod: dict) -> list[str]:
    out = [*_image_problems(c.get("image", ""))] if c.get("image") else []
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        missing = [r for r in ("cpu", "memory") if r not in (res.get(kind) or {})]
        if missing:
            out.append(f"resources.{kind} lacks {', '.join(missing)}")
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        out.append("runAsNonRoot is not set (container or pod)")
    if sc.get("runAsUser") == 0 or psc.get("runAsUser") == 0:
        out.append("runs as uid 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        out.append("capabilities must drop ALL")
    if sc.get("privileged"):
        out.append("privileged")
    for e in c.get("env") or []:
        if "value" in e and e["value"] and (SECRET_NAME.search(e["name"]) or URI_WITH_PASSWORD.search(str(e["value"]))):
            out.append(f"env {e['name']} has an inline value: take it from a secret")
    for arg in [*(c.get("command") or []), *(c.get("args") or [])]:
        if URI_WITH_PASSWORD.search(str(arg)):
            out.append(f"argument {arg!r} carries a password")
    return out


def policy_violations(docs: list[dict], namespace: str = "sifthinker") -> list[str]:
    """The house rules: pinned images, resources, non-root, read-only root, no plaintext secrets,
    least-privilege RBAC, one namespace."""
    probs = []
    for doc in docs:
        name, kind, md = _name(doc), doc.get("kind"), doc.get("metadata") or {}
        if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
            probs.append(f"{name}: a Secret with values in the manifests (keep templates in base/secrets/)")
        if kind in ("ClusterRole", "ClusterRoleBinding"):
            probs.append(f"{name}: cluster-wide permissions; the platform's RBAC is namespaced (Role)")
        if kind == "Role":
            for i, rule in enumerate(doc.get("rules") or []):
                if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
                    probs.append(f"{name}: rules[{i}] uses a wildcard")
        if kind not in CLUSTER_SCOPED and md.get("namespace") != namespace:
            probs.append(f"{name}: namespace {md.get('namespace')!r}, expected {namespace!r}")
        if kind in CLUSTER_SCOPED and "namespace" in md:
            probs.append(f"{name}: a cluster-scoped object with metadata.namespace")
        for where, pod in pod_specs(doc):
            for cwhere, c in _containers(pod):
                at = f"{name}: {where}.{cwhere}"
                probs += [f"{at}: {p}" for p in _container_problems(c, pod)]
                if not (c.get("securityContext") or {}).get("readOnlyRootFilesystem") and \
                        (kind, c.get("name")) not in WRITABLE_ROOT:
                    probs.append(f"{at}: readOnlyRootFilesystem is not true (or list it in WRITABLE_ROOT with a reason)")
            if kind in ("Deployment", "StatefulSet"):
                probs += [f"{name}: {where}.containers[{c.get('name')}]: no readinessProbe"
                          for c in pod.get("containers") or [] if "readinessProbe" not in c]
    return probs


def images(docs: list[dict]) -> set[str]:
    """Every container image the documents name."""
    return {c["image"] for d in docs for _, pod in pod_specs(d) for _, c in _containers(pod) if c.get("image")}


def check(overlay: Path, crd_dir: Path | None = None) -> Report:
    rep = Report(overlay=str(overlay))
    try:
        rep.docs = render(overlay)
    except RuntimeError as e:
        rep.violations.append(str(e))
        return rep
    core, rep.checked["core"] = core_violations(rep.docs)
    rep.violations += core
    if crd_dir is not None:
        crd, rep.checked["crd"] = crd_violations(rep.docs, crd_dir)
        rep.violations += crd
    rep.violations += policy_violations(rep.docs)
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python manifests/validate.py", description=__doc__.splitlines()[0])
    p.add_argument("overlays", nargs="*", type=Path, help="overlay folders (default: manifests/overlays/*)")
    a = p.parse_args(argv)
    overlays = a.overlays or sorted(d for d in (HERE / "overlays").iterdir() if (d / "kustomization.yaml").is_file())
    crd_dir = crds.crd_dir()
    if crd_dir is None:
        print("CRD_DIR is not set: custom resources are checked by policy only, not against their CRD schemas")
    failed = 0
    for overlay in overlays:
        rep = check(overlay, crd_dir)
        counts = ", ".join(f"{n} {what}" for what, n in rep.checked.items())
        if rep.violations:
            failed += 1
            print(f"FAIL {overlay}: {len(rep.violations)} violation(s) in {len(rep.docs)} objects ({counts} validated)")
            print("\n".join(f"  - {v}" for v in rep.violations))
        else:
            print(f"ok   {overlay}: {len(rep.docs)} objects ({counts} validated by schema), policy clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
