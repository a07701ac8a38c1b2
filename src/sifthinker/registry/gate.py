"""The quality gate between evaluation and registration: every threshold metric must reach its minimum.

``check_gate(metrics, thresholds, vs_champion, champion)`` is pure: the gate stage reads the evaluate
stage's metrics (keyed ``<benchmark>/<metric>``, SIF-Bench's also bare), the absolute minimums from
``cfg.gate.thresholds`` (inclusive), and the champion-relative rules from ``cfg.gate.vs_champion``
(metric -> allowed drop: the candidate needs ``value >= champion's value - drop``), with the current
champion's registered metrics (``sifthinker.registry.model_versions.champion_metrics``). A threshold whose metric is
absent from the evaluation is a failure, never a silent pass: a renamed metric must not open the gate.
A metric that is not a finite number (NaN, inf, a string) is a failure too. A champion-relative rule
with no champion yet (or a champion that never measured that metric) passes and says so in ``notes``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig

__all__ = ["GateError", "GateResult", "champion_metrics", "check_gate", "load_metrics", "merge_metrics", "run_gate"]


class GateError(RuntimeError):
    """Raised by :meth:`GateResult.raise_if_failed`; the message lists every failure."""


@dataclass
class GateResult:
    """Outcome of the gate.

    ``checked`` maps each threshold metric to ``{"value": float | None, "min": float, "passed": bool}``;
    ``note`` explains a pass that checked nothing (empty thresholds).
    """

    passed: bool
    failures: list[str] = field(default_factory=list)
    checked: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None
    notes: list[str] = field(default_factory=list)  # champion-relative rules that had nothing to compare with

    def summary(self) -> str:
        if self.passed:
            head = f"gate passed ({len(self.checked)} threshold(s))"
            return f"{head}: {self.note}" if self.note else head
        return "gate failed:\n" + "\n".join(f"  - {f}" for f in self.failures)

    def headline(self) -> str:
        """One line: the verdict and each threshold, e.g. ``failed: accuracy 0.02 < 0.45``."""
        if not self.checked and not self.notes:
            return "passed (no thresholds configured)"
        parts = []
        for name, c in self.checked.items():
            shown = "missing" if c["value"] is None else f"{c['value']:.3f}"
            parts.append(f"{name} {shown} {'>=' if c['passed'] else '<'} {c['min']:g}")
        parts += self.notes
        return f"{'passed' if self.passed else 'FAILED'}: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GateError(self.summary())


def _fmt_pair(value: float, minimum: float) -> tuple[str, str]:
    """Format value and minimum with 2 decimals, more when 2 would make them look equal (0.799 vs 0.8)."""
    for digits in range(2, 7):
        v, m = f"{value:.{digits}f}", f"{minimum:.{digits}f}"
        if v != m:
            return v, m
    return repr(value), repr(minimum)


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def check_gate(metrics: Mapping[str, Any], thresholds: Mapping[str, float],
               vs_champion: Mapping[str, float] | None = None,
               champion: Mapping[str, Any] | None = None) -> GateResult:
    """Check ``metrics[name] >= minimum`` for every ``name, minimum`` in ``thresholds``, and
    ``metrics[name] >= champion[name] - drop`` for every ``name, drop`` in ``vs_champion``.

    Failure lines read ``"format_validity 0.42 < 0.80"``, ``"spatialbench/overall 0.58 < 0.61 (champion
    0.62 - 0.01)"``, ``"metric 'x' missing from evaluation"`` or ``"metric 'x' is not a finite number:
    nan"``. No rules at all pass, with a ``note`` saying that nothing was checked.
    """
    failures: list[str] = []
    checked: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    relative: dict[str, float] = {}
    for name, raw_drop in (vs_champion or {}).items():
        drop = _as_number(raw_drop)
        if drop is None or drop < 0:
            raise ValueError(f"allowed drop for {name!r} must be a finite number >= 0, got {raw_drop!r}")
        base = None if champion is None else _as_number(champion.get(name))
        if champion is None:
            notes.append(f"{name}: no champion yet, nothing to compare with")
        elif base is None:
            notes.append(f"{name}: the champion has no registered value, nothing to compare with")
        else:
            relative[name] = base - drop
            checked[f"{name} vs champion"] = {"champion": base, "drop": drop}
    for name, raw_min in thresholds.items():
        minimum = _as_number(raw_min)
        if minimum is None:
            raise ValueError(f"threshold for {name!r} must be a finite number, got {raw_min!r}")
        if name not in metrics:
            failures.append(f"metric {name!r} missing from evaluation")
            checked[name] = {"value": None, "min": minimum, "passed": False}
            continue
        value = _as_number(metrics[name])
        if value is None:
            failures.append(f"metric {name!r} is not a finite number: {metrics[name]!r}")
            checked[name] = {"value": None, "min": minimum, "passed": False}
            continue
        ok = value >= minimum
        checked[name] = {"value": value, "min": minimum, "passed": ok}
        if not ok:
            v, m = _fmt_pair(value, minimum)
            failures.append(f"{name} {v} < {m}")
    for name, minimum in relative.items():
        c = checked[f"{name} vs champion"]
        value = _as_number(metrics.get(name))
        c.update(value=value, min=minimum, passed=value is not None and value >= minimum)
        if value is None:
            failures.append(f"metric {name!r} missing from evaluation (needed to compare with the champion)")
        elif not c["passed"]:
            v, m = _fmt_pair(value, minimum)
            failures.append(f"{name} {v} < {m} (champion {c['champion']:g} - {c['drop']:g})")
    note = None if thresholds or vs_champion else "no thresholds configured: the gate checked nothing"
    return GateResult(passed=not failures, failures=failures, checked=checked, note=note, notes=notes)


def champion_metrics(cfg: RunConfig) -> dict[str, float] | None:
    """The current champion's registered metrics (``registry.get_metrics``), or None when there is no
    champion yet (no store, no model, no alias). An unreachable or failing store raises RegistryError:
    the gate must not pass a champion-relative rule because it could not look."""
    from sifthinker.registry.model_versions import CHAMPION, NotRegistered, get_metrics

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # nothing was ever registered here
    try:
        return get_metrics(cfg, f"models:/{cfg.registry.model_name}@{CHAMPION}")
    except NotRegistered:
        return None


def run_gate(cfg: RunConfig, metrics: Mapping[str, Any]) -> GateResult:
    """The gate stage: ``cfg.gate`` rules on ``metrics``; the champion is looked up only when a rule needs it."""
    champion = champion_metrics(cfg) if cfg.gate.vs_champion else None
    return check_gate(metrics, cfg.gate.thresholds, cfg.gate.vs_champion, champion)


def merge_metrics(parts: Sequence[str | Mapping[str, Any]]) -> dict[str, Any]:
    """One metrics dict from the evaluate steps' outputs (JSON texts or dicts); a key reported twice with
    different values is an error, not a silent overwrite."""
    out: dict[str, Any] = {}
    for part in parts:
        data = json.loads(part) if isinstance(part, str) else dict(part)
        for k, v in data.items():
            if k in out and out[k] != v:
                raise ValueError(f"metric {k!r} reported twice with different values: {out[k]!r} and {v!r}")
            out[k] = v
    return out


def load_metrics(path: str | Path) -> dict[str, float]:
    """Read an evaluation ``metrics.json`` (a flat JSON object of metric name -> number)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: metrics must be a JSON object, got {type(data).__name__}")
    return data
