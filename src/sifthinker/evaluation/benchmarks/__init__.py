"""The benchmarks `sifthinker eval` runs: one adapter module per benchmark, all on the item form of
:mod:`sifthinker.evaluation.benchmarks.base`.

Each module defines ``BENCHMARK``, an object following :class:`~sifthinker.evaluation.benchmarks.base.Benchmark`.
Modules load on first use, so naming a benchmark costs only its own imports.
"""

from __future__ import annotations

from importlib import import_module

from sifthinker.evaluation.benchmarks.base import Benchmark, BenchmarkScore, Item, ItemResult, Scoring
from sifthinker.names import BENCHMARKS

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkScore", "Item", "ItemResult", "Scoring", "get_benchmark"]

_MODULES = {"sif-bench": "sifbench", "spatialbench": "spatialbench", "cv-bench": "cvbench", "vstar": "vstar",
            "sat": "sat", "refcoco": "refcoco", "ovdeval": "ovdeval"}
assert set(_MODULES) == set(BENCHMARKS)  # one list of names: sifthinker.names


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (ValueError listing the known ones otherwise)."""
    if name not in _MODULES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return import_module(f"{__name__}.{_MODULES[name]}").BENCHMARK
