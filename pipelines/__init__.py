"""Kubeflow Pipelines definitions of SIFThinker (see pipelines/README.md)."""

from pipelines.sifthinker_pipeline import build_pipeline, pipeline_name

__all__ = ["build_pipeline", "pipeline_name"]
