"""The `build_data` component."""

from components.build_data.component import build_data

__all__ = ["build_data"]
