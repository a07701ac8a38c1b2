"""The quality gate between evaluation and registration: every threshold metric must reach its minimum.

``check_gate(metrics, thresholds)`` is pure: the gate stage reads ``metrics.json`` from the evaluate
stage and the thresholds from ``cfg.gate.thresholds`` (metric name -> minimum, inclusive). A threshold
whose metric is absent from the evaluation is a failure, never a silent pass: a renamed metric must not
open the gate. A metric that is not a finite number (NaN, inf, a string) is a failure too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GateError", "GateResult", "check_gate", "load_metrics"]


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

    def summary(self) -> str:
        if self.passed:
            head = f"gate passed ({len(self.checked)} threshold(s))"
            return f"{head}: {self.note}" if self.note else head
        return "gate failed:\n" + "\n".join(f"  - {f}" for f in self.failures)

    def headline(self) -> str:
        """One line: the verdict and each threshold, e.g. ``failed: accuracy 0.02 < 0.45``."""
        if not self.checked:
            return "passed (no thresholds configured)"
        parts = []
        for name, c in self.checked.items():
            shown = "missing" if c["value"] is None else f"{c['value']:.3f}"
            parts.append(f"{name} {shown} {'>=' if c['passed'] else '<'} {c['min']:g}")
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


def check_gate(metrics: Mapping[str, Any], thresholds: Mapping[str, float]) -> GateResult:
    """Check ``metrics[name] >= minimum`` for every ``name, minimum`` in ``thresholds``.

    Failure lines read ``"format_validity 0.42 < 0.80"``, ``"metric 'x' missing from evaluation"`` or
    ``"metric 'x' is not a finite number: nan"``. Empty thresholds pass, with a ``note`` saying that
    nothing was checked.
    """
    failures: list[str] = []
    checked: dict[str, dict[str, Any]] = {}
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
    note = None if thresholds else "no thresholds configured: the gate checked nothing"
    return GateResult(passed=not failures, failures=failures, checked=checked, note=note)


def load_metrics(path: str | Path) -> dict[str, float]:
    """Read an evaluation ``metrics.json`` (a flat JSON object of metric name -> number)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: metrics must be a JSON object, got {type(data).__name__}")
    return data
