"""Data sources: each turns its published files (or generated scenes) into :class:`SourceItem` s.

``synthetic`` (the embedded default), ``sif50k`` (the released SIF-50K JSON), ``viscot``
(``viscot_363k.json``), ``tallyqa`` and ``jsonl`` (users' own data); docs/data.md describes each.
"""

from __future__ import annotations

from sifthinker.data.sources.base import (
    Entry,
    Locator,
    Rejected,
    Source,
    SourceError,
    SourceItem,
    SourceSpec,
    in_split,
)
from sifthinker.data.sources.jsonl import JsonlSource
from sifthinker.data.sources.sif50k import SIF50KSource
from sifthinker.data.sources.synthetic import SyntheticSource, synthetic_item
from sifthinker.data.sources.tallyqa import TallyQASource
from sifthinker.data.sources.viscot import EXCLUDED_SUBSETS, VisCoTSource

__all__ = ["EXCLUDED_SUBSETS", "SOURCES", "Entry", "JsonlSource", "Locator", "Rejected", "SIF50KSource",
           "Source", "SourceError", "SourceItem", "SourceSpec", "SyntheticSource", "TallyQASource",
           "VisCoTSource", "in_split", "make_source", "synthetic_item"]

SOURCES = {"synthetic": SyntheticSource, "sif50k": SIF50KSource, "viscot": VisCoTSource,
           "tallyqa": TallyQASource, "jsonl": JsonlSource}


def make_source(spec: SourceSpec) -> Source:
    """The source a spec names (in a worker process too: a spec is plain data)."""
    if spec.name not in SOURCES:
        raise SourceError(f"unknown data source {spec.name!r}; available: {sorted(SOURCES)}")
    if spec.name == "synthetic":
        return SyntheticSource(int(spec.option("width", 320)), int(spec.option("height", 240)))
    return SOURCES[spec.name](spec)
