"""The `grpo_sif` component."""

from components.grpo_sif.component import grpo_sif

__all__ = ["grpo_sif"]
