"""Offline validation of Kubernetes custom resources against their CRDs' ``openAPIV3Schema``.

The CRDs are read from one folder, ``CRD_DIR`` (environment variable); by default ``../shared/crds``
beside the repository checkout (looked up from the repository root, then from the working directory).
Point it at your cluster's CRDs (``kubectl get crd NAME -o yaml > DIR/NAME.yaml``) to validate against
the versions you run. The CRD files are never copied into this repository.

Checks, stricter than a plain JSON-schema pass and close to ``kubectl apply --validate=strict``:

* the structural schema (types, required fields, enums, patterns, min/max, ``anyOf`` int-or-string);
* unknown fields are errors wherever the schema does not preserve unknown fields (the API server would
  prune or reject them; a typo must not vanish silently);
* ``nullable`` and ``x-kubernetes-list-type: map|set`` (unique keys / items);
* ``metadata``: a name (or generateName) that is a DNS-1123 name, string-valued labels and annotations.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

CRD_DIR_ENV = "CRD_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# kinds whose controllers derive DNS labels (Services, hostnames) from the name
_LABEL_NAMED_KINDS = {"InferenceService"}
_QUANTITY_PATTERN_START = "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ValidationError(ValueError):
    """An object that does not match its CRD; ``violations`` lists every problem as ``path: message``."""

    def __init__(self, what: str, violations: list[str], source: str = ""):
        self.what = what
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        src = f" ({source})" if source else ""
        super().__init__(f"{what}: {len(violations)} violation(s){src}:\n{lines}")


class UnknownKindError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def crd_dir() -> Path:
    """The CRD folder: ``$CRD_DIR``, else ``<repo>/../shared/crds``, else ``<cwd>/../shared/crds``."""
    if env := os.environ.get(CRD_DIR_ENV):
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"{CRD_DIR_ENV}={env} is not a folder")
        return p.resolve()
    candidates = [_REPO_ROOT.parent / "shared" / "crds", Path.cwd().parent / "shared" / "crds", Path.cwd() / "shared" / "crds"]
    for p in candidates:
        if p.is_dir():
            return p.resolve()
    raise FileNotFoundError(
        f"no CRD folder found (tried {', '.join(str(c) for c in candidates)}); set {CRD_DIR_ENV} to a folder "
        "holding the CRD YAMLs (e.g. `kubectl get crd inferenceservices.serving.kserve.io -o yaml`)"
    )


# ---- schema preparation ----------------------------------------------------------------------------
def _strict(schema: Any) -> Any:
    """Copy of an OpenAPI v3 CRD schema for jsonschema: closed objects, nullable as a null type."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = {k: _strict(v) for k, v in schema.items()}
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"] if isinstance(s["type"], str) else [*s["type"], "null"]
    if (
        "properties" in s
        and "additionalProperties" not in s
        and not s.get("x-kubernetes-preserve-unknown-fields")
    ):
        s["additionalProperties"] = False
    return s


def _read_crds(folder: Path) -> dict[tuple[str, str], dict]:
    """``{(apiVersion, kind): {"schema", "source", "name"}}`` for every CRD YAML in ``folder``."""
    out: dict[tuple[str, str], dict] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")]):
        with path.open() as f:
            docs = list(yaml.load_all(f, Loader=_Loader))
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for v in spec.get("versions", []):
                schema = (v.get("schema") or {}).get("openAPIV3Schema")
                if schema is None:
                    continue
                out[(f"{group}/{v['name']}", kind)] = {
                    "schema": schema,
                    "source": str(path),
                    "name": doc.get("metadata", {}).get("name", f"{spec['names']['plural']}.{group}"),
                    "served": v.get("served", True),
                }
    return out


@functools.lru_cache(maxsize=8)
def _crds(folder: str) -> dict[tuple[str, str], dict]:
    return _read_crds(Path(folder))


@functools.lru_cache(maxsize=32)
def _validator(folder: str, api_version: str, kind: str):
    import jsonschema
    from jsonschema import validators

    entry = _crds(folder)[(api_version, kind)]

    def list_map_keys(validator, keys, instance, schema):
        if not isinstance(instance, list) or schema.get("x-kubernetes-list-type") != "map":
            return
        seen: dict[tuple, int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                desc = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
                yield jsonschema.ValidationError(f"items {seen[key]} and {i} have the same key ({desc})")
            else:
                seen[key] = i

    def list_type(validator, value, instance, schema):
        if value == "set" and isinstance(instance, list):
            reprs = [repr(x) for x in instance]
            dup = sorted({r for r in reprs if reprs.count(r) > 1})
            if dup:
                yield jsonschema.ValidationError(f"list-type set has duplicate items: {', '.join(dup)}")

    cls = validators.extend(
        jsonschema.Draft4Validator,
        {"x-kubernetes-list-map-keys": list_map_keys, "x-kubernetes-list-type": list_type},
    )
    return cls(_strict(copy.deepcopy(entry["schema"]))), entry


# ---- public API ------------------------------------------------------------------------------------
def known_kinds(folder: str | Path | None = None) -> list[tuple[str, str]]:
    """The (apiVersion, kind) pairs the CRD folder defines."""
    return sorted(_crds(str(folder or crd_dir())))


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _metadata_violations(obj: dict) -> list[str]:
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return ["metadata: required object is missing"]
    out = []
    name = md.get("name")
    if name is None and not md.get("generateName"):
        out.append("metadata.name: required (or metadata.generateName)")
    elif name is not None:
        if not isinstance(name, str):
            out.append(f"metadata.name: must be a string, got {name!r}")
        elif obj.get("kind") in _LABEL_NAMED_KINDS:
            if len(name) > 63 or not _DNS1035_LABEL.match(name):
                out.append(
                    f"metadata.name: {name!r} must be a DNS-1035 label (lower-case letters, digits and '-', "
                    "starting with a letter, at most 63 characters)"
                )
        elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            out.append(f"metadata.name: {name!r} must be a DNS-1123 subdomain")
    for key in ("labels", "annotations"):
        m = md.get(key)
        if m is None:
            continue
        if not isinstance(m, dict):
            out.append(f"metadata.{key}: must be a map of strings")
            continue
        for k, v in m.items():
            if not isinstance(v, str):
                out.append(f"metadata.{key}.{k}: value must be a string, got {v!r} (quote it in YAML)")
    ns = md.get("namespace")
    if ns is not None and (not isinstance(ns, str) or len(ns) > 63 or not _DNS1123_LABEL.match(ns)):
        out.append(f"metadata.namespace: {ns!r} must be a DNS-1123 label")
    return out


def violations(obj: Any, folder: str | Path | None = None) -> list[str]:
    """Every problem of ``obj`` against its CRD (``[]`` when valid); raises UnknownKindError for a kind
    that no CRD in the folder defines."""
    if not isinstance(obj, dict):
        return [f"<root>: a Kubernetes object is a mapping, got {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        return ["<root>: apiVersion and kind are required"]
    folder = str(folder or crd_dir())
    if (api_version, kind) not in _crds(folder):
        known = ", ".join(f"{k} ({a})" for a, k in sorted(_crds(folder))) or "none"
        raise UnknownKindError(f"no CRD for {kind} {api_version} in {folder}; known: {known}")
    validator, _ = _validator(folder, api_version, kind)
    probs = _metadata_violations(obj)
    body = {k: v for k, v in obj.items() if k != "metadata"}
    for err in sorted(validator.iter_errors(body), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        msg = err.message
        if err.validator == "additionalProperties" and err.validator_value is False:
            msg = msg.replace("Additional properties are not allowed", "unknown field(s)")
        elif err.validator == "pattern" and err.validator_value.startswith(_QUANTITY_PATTERN_START):
            msg = f"{err.instance!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"
        probs.append(f"{_path(err.absolute_path)}: {msg}")
    return probs


def validate(obj: dict, folder: str | Path | None = None) -> dict:
    """Raise :class:`ValidationError` listing every violation of ``obj`` against its CRD; returns ``obj``."""
    probs = violations(obj, folder)
    if probs:
        md = obj.get("metadata") if isinstance(obj, dict) else None
        name = md.get("name", "?") if isinstance(md, dict) else "?"
        what = f"{obj.get('kind', '?')}/{name}" if isinstance(obj, dict) else "object"
        f = str(folder or crd_dir())
        src = _crds(f).get((obj.get("apiVersion"), obj.get("kind")), {}).get("source", f)
        raise ValidationError(what, probs, f"schema from {src}")
    return obj


def validate_documents(docs: Iterable[dict], folder: str | Path | None = None, kinds: set[str] | None = None) -> int:
    """Validate every document whose kind has a CRD (or is in ``kinds``); returns how many were checked.

    Built-in kinds (ServiceAccount, Secret, ...) are skipped unless listed in ``kinds``; all violations
    of all documents are reported in one :class:`ValidationError`.
    """
    folder = str(folder or crd_dir())
    crds = _crds(folder)
    checked, problems = 0, []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in crds and (kinds is None or doc.get("kind") not in kinds):
            continue
        checked += 1
        name = (doc.get("metadata") or {}).get("name", "?")
        try:
            probs = violations(doc, folder)
        except UnknownKindError as e:
            probs = [str(e)]
        problems += [f"{doc.get('kind')}/{name}: {p}" for p in probs]
    if problems:
        raise ValidationError(f"{checked} document(s)", problems, f"CRDs from {folder}")
    return checked


def load_documents(text: str) -> list[dict]:
    """The non-empty documents of a (multi-document) YAML text."""
    return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
