"""Typed, checked loading of nested dataclasses from YAML data: the machinery behind ``RunConfig``.

:func:`build` turns plain YAML data into a (nested) dataclass, with the key path in every error, and
enforces each field's metadata constraints (``ge``, ``gt``, ``le``, ``lt``, ``choices``, ``pattern``,
``nonempty``, ``keys``, ``any_positive``, ``ge_field``, ``allow``) on every section it builds.
:func:`read_yaml` reads a file strictly (a key given twice is an error), :func:`describe_fields` lists
every key with its type, default and help. :func:`doc_field` declares such a field.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml


def doc_field(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
              **rules: Any) -> Any:
    """A dataclass field with TRL-style ``metadata={"help": ...}`` and its value constraints (checked by
    :func:`build`); every recipe section declares its fields with it."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help, **rules})


class ConfigError(ValueError):
    """A recipe that cannot be loaded; the message names the offending key, or every one of them.

    ``problems`` lists each mistake on its own (one ``recipe.key: what is wrong`` each), so a recipe with
    several mistakes is fixed in one round, not one error at a time."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        """One error for all ``problems`` (each kept as it is when there is just one)."""
        if len(problems) == 1:
            return cls(problems[0])
        return cls(f"{len(problems)} problems: " + "; ".join(problems), problems)


def read_yaml(p: Path) -> Any:
    """The YAML data of file ``p``; ConfigError with file, line and column when it is not valid YAML."""
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read recipe {p}: {e}") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise ConfigError(f"{where}: invalid YAML: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice: plain YAML keeps the last one, silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# ---- checking values ------------------------------------------------------------------------------


_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _check_value(v: Any, rules: dict[str, Any], where: str) -> None:
    """Bounds, choices, pattern and finiteness of one scalar value."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{where}: must be a finite number, got {v!r}")
    if isinstance(v, int | float) and not isinstance(v, bool) and v not in rules.get("allow", ()):
        for key, (sign, holds) in _BOUNDS.items():
            if key in rules and not holds(v, rules[key]):
                also = "".join(f" (or {a})" for a in rules.get("allow", ()))
                raise ConfigError(f"{where}: must be {sign} {rules[key]}{also}, got {v!r}")
    if "choices" in rules and v not in rules["choices"]:
        raise ConfigError(f"{where}: must be one of {list(rules['choices'])}, got {v!r}")
    if rules.get("nonempty") and isinstance(v, str) and not v.strip():
        raise ConfigError(f"{where}: must not be empty")
    if "pattern" in rules and isinstance(v, str) and not re.fullmatch(rules["pattern"][0], v):
        raise ConfigError(f"{where}: must be {rules['pattern'][1]}, got {v!r}")


def _field_problems(obj: Any, where: str, skip: set[str] = frozenset()) -> list[str]:
    """Every field's metadata constraints on a built section (defaults included), all problems found."""
    problems: list[str] = []
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        try:
            _check_field(obj, f, where)
        except ConfigError as e:
            problems += e.problems
    return problems


def _check_field(obj: Any, f: dataclasses.Field, where: str) -> None:
    v, rules, here = getattr(obj, f.name), f.metadata, f"{where}.{f.name}"
    if v is not None:  # None: an optional field left out
        if "ge_field" in rules and v < getattr(obj, rules["ge_field"]):
            other = rules["ge_field"]
            raise ConfigError(f"{here}: must be >= {where.removeprefix('recipe.')}.{other} "
                              f"({getattr(obj, other)}), got {v!r}")
        if isinstance(v, dict):
            bad = sorted(set(v) - set(rules.get("keys", v)))
            if bad:
                raise ConfigError(f"{here}: unknown key(s) {bad}; allowed: {list(rules['keys'])}")
            items = [(f"{here}.{k}", x) for k, x in v.items()]
        elif isinstance(v, list):
            if rules.get("nonempty") and not v:
                raise ConfigError(f"{here}: must not be empty")
            items = [(f"{here}[{i}]", x) for i, x in enumerate(v)]
        else:
            items = [(here, v)]
        for at, x in items:
            if not dataclasses.is_dataclass(x):  # nested sections were checked when built
                _check_value(x, rules, at)
        if rules.get("any_positive") and not any(x > 0 for x in v.values()):
            raise ConfigError(f"{here}: at least one value must be > 0, got {v}")


def build(tp: Any, value: Any, where: str) -> Any:
    """Build a (nested) dataclass or typed value from plain YAML data, with key paths in errors."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        last: Exception | None = None
        for a in args:
            try:
                return build(a, value, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        problems: list[str] = []  # every mistake of the section, not only the first
        unknown = sorted(set(value) - names)
        if unknown:
            problems.append(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
        kwargs, failed = {}, set()
        for k, v in value.items():
            if k in names:
                try:
                    kwargs[k] = build(hints[k], v, f"{where}.{k}")
                except ConfigError as e:
                    problems += e.problems
                    failed.add(k)
        try:
            obj = tp(**kwargs)  # failed keys take their defaults, so the other keys are still checked
        except TypeError as e:  # a required key missing (or one that failed, then not a second problem)
            raise ConfigError.of(problems if failed else [*problems, f"{where}: {e}"]) from e
        except ConfigError as e:  # a section's own cross-key check, unreliable once a key took its default
            raise ConfigError.of(problems if failed else [*problems, *e.problems]) from e
        problems += _field_problems(obj, where, skip=failed)
        if problems:
            raise ConfigError.of(problems)
        return obj
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        (a,) = typing.get_args(tp)
        built, problems = [], []
        for i, v in enumerate(value):
            try:
                built.append(build(a, v, f"{where}[{i}]"))
            except ConfigError as e:
                problems += e.problems
        if problems:
            raise ConfigError.of(problems)
        return built
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): build(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-4 as a string
        except ValueError as e:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from e
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


# ---- documentation --------------------------------------------------------------------------------


class FieldDoc(NamedTuple):
    path: str  # e.g. "grpo.lora.r"; list items as "platform.gpu.tolerations[].key"
    type: str
    default: Any  # dataclasses.MISSING for a required key
    help: str


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is not None:
        return f"{typing.get_origin(tp).__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def describe_fields(tp: Any, prefix: str = "") -> Iterator[FieldDoc]:
    """(key path, type, default, help) of every recipe key, sections first then their keys, in order."""
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        path, hint = f"{prefix}{f.name}", hints[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        yield FieldDoc(path, _type_name(hint), default, f.metadata.get("help", ""))
        inner = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        for a in inner:  # a section, an optional section or a list of sections
            yield from describe_fields(a, f"{path}[]." if typing.get_origin(hint) is list else f"{path}.")
