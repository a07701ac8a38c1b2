"""Fixtures of the serving tests."""

from __future__ import annotations

import pytest
from helpers import LIMITED_SERVING, ServingServer, start_serving


@pytest.fixture(scope="session")
def limited_server(tiny_model_dir, tmp_path_factory) -> ServingServer:
    """``sifthinker serve`` on the tiny model with ``LIMITED_SERVING`` (small limits, so that every limit is
    reachable with small requests): one server for the limit, attack and fuzz tests."""
    with start_serving(tiny_model_dir, tmp_path_factory.mktemp("limited"), LIMITED_SERVING) as server:
        yield server
