"""Offline validation of Kubernetes custom resources against their CRDs' ``openAPIV3Schema``.

The CRDs are read from one folder: the one a caller passes, else ``$CRD_DIR``. There is no default: the
CRD files are never copied into this repository and nothing outside the checkout is assumed, so without
a folder CRD validation is simply not available (:func:`crd_dir` returns None and callers fall back,
e.g. ``sifthinker.serving.deploy`` on KServe's typed models). Point ``CRD_DIR`` at your cluster's CRDs
(``kubectl get crd NAME -o yaml > DIR/NAME.yaml``) to validate against the versions you run.

Checks, stricter than a plain JSON-schema pass and close to ``kubectl apply --validate=strict``:

* the structural schema (types, required fields, enums, patterns, min/max, ``anyOf`` int-or-string);
* unknown fields are errors wherever the schema does not preserve unknown fields (the API server would
  prune or reject them; a typo must not vanish silently);
* ``nullable`` and ``x-kubernetes-list-type: map|set`` (unique keys / items);
* ``metadata``: a name (or generateName) that is a DNS-1123 name, string-valued labels and annotations.

:func:`metadata_violations` and :func:`quantity_violations` need no CRD: callers without a CRD folder
still run them (typed client models check required fields, not names or quantities).
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

from sifthinker.names import Env

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


class NoCRDFolderError(FileNotFoundError):
    """CRD validation was asked for without a CRD folder (none passed, ``CRD_DIR`` unset)."""


def crd_dir() -> Path | None:
    """The CRD folder named by ``$CRD_DIR``, or None when it is unset (CRD validation unavailable).

    A set but missing folder is an error rather than None: a typo must not silently skip validation.
    """
    env = os.environ.get(Env.CRD_DIR)
    if not env:
        return None
    p = Path(env).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{Env.CRD_DIR}={env} is not a folder (point it at the CRD YAMLs, or unset it to skip CRD validation)"
        )
    return p.resolve()


def _folder(folder: str | Path | None) -> str:
    """``folder``, else ``$CRD_DIR``; a clear error when there is neither."""
    if folder:
        return str(folder)
    if (found := crd_dir()) is None:
        raise NoCRDFolderError(
            f"no CRD folder: pass one or set {Env.CRD_DIR} to a folder holding the CRD YAMLs "
            "(e.g. `kubectl get crd inferenceservices.serving.kserve.io -o yaml > DIR/isvc.yaml`)"
        )
    return str(found)


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
        # `kubectl get crd A B -o yaml` writes one List holding the CRDs
        docs = [i for d in docs for i in (d.get("items") or [] if isinstance(d, dict) and d.get("kind") == "List" else [d])]
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
    return sorted(_crds(_folder(folder)))


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def metadata_violations(obj: dict) -> list[str]:
    """Problems of ``obj['metadata']`` (name, labels, annotations, namespace); needs no CRD."""
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


def quantity_violations(obj: Any) -> list[str]:
    """Resource amounts (``resources.limits|requests``) and ``emptyDir.sizeLimit`` values anywhere in
    ``obj`` that are not Kubernetes quantities; needs no CRD (typed client models accept any string)."""
    from kubernetes.utils import parse_quantity

    def amounts(node: Any, at: tuple) -> Iterable[tuple[tuple, Any]]:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if k == "resources" and isinstance(v, dict):
                for kind in ("limits", "requests"):
                    yield from (((*at, k, kind, r), a) for r, a in (v.get(kind) or {}).items())
            elif k == "emptyDir" and isinstance(v, dict) and v.get("sizeLimit") is not None:
                yield (*at, k, "sizeLimit"), v["sizeLimit"]
            else:
                yield from amounts(v, (*at, k))

    probs = []
    for where, value in amounts(obj, ()):
        try:
            parse_quantity(value)
        except (ValueError, TypeError):
            probs.append(f"{_path(where)}: {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    return probs


def violations(obj: Any, folder: str | Path | None = None) -> list[str]:
    """Every problem of ``obj`` against its CRD (``[]`` when valid); raises UnknownKindError for a kind
    that no CRD in the folder defines."""
    if not isinstance(obj, dict):
        return [f"<root>: a Kubernetes object is a mapping, got {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        return ["<root>: apiVersion and kind are required"]
    folder = _folder(folder)
    if (api_version, kind) not in _crds(folder):
        known = ", ".join(f"{k} ({a})" for a, k in sorted(_crds(folder))) or "none"
        raise UnknownKindError(f"no CRD for {kind} {api_version} in {folder}; known: {known}")
    validator, _ = _validator(folder, api_version, kind)
    probs = metadata_violations(obj)
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
    folder = _folder(folder)
    probs = violations(obj, folder)
    if probs:
        md = obj.get("metadata") if isinstance(obj, dict) else None
        name = md.get("name", "?") if isinstance(md, dict) else "?"
        what = f"{obj.get('kind', '?')}/{name}" if isinstance(obj, dict) else "object"
        src = _crds(folder).get((obj.get("apiVersion"), obj.get("kind")), {}).get("source", folder)
        raise ValidationError(what, probs, f"schema from {src}")
    return obj


def validate_documents(docs: Iterable[dict], folder: str | Path | None = None, kinds: set[str] | None = None) -> int:
    """Validate every document whose kind has a CRD (or is in ``kinds``); returns how many were checked.

    Built-in kinds (ServiceAccount, Secret, ...) are skipped unless listed in ``kinds``; all violations
    of all documents are reported in one :class:`ValidationError`.
    """
    folder = _folder(folder)
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
