"""The `sft` component."""

from components.sft.component import sft

__all__ = ["sft"]
