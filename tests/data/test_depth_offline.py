"""Depth-Anything-V2 weights that are neither cached nor downloadable fail at once, saying what to do
instead (issue 22: the build used to retry the hub for ~55 s and then name no way out)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sifthinker.cli import main
from sifthinker.data.depth_providers import check_dav2_weights
from sifthinker.serving.process import free_port

ITEMS = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "jsonl" / "items.jsonl"
UNCACHED = "sifthinker-tests/no-such-depth-model"


def test_offline_build_with_default_depth_fails_fast_and_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"depth:\n  model: {UNCACHED}\n")
    started = time.monotonic()
    res = CliRunner().invoke(main, ["data", "build", "--source", "jsonl", "--input", str(ITEMS),
                                    "--recipe", str(recipe), "--out", str(tmp_path / "d")])
    assert res.exit_code == 1, res.output
    assert f"weights {UNCACHED!r} (depth.model) are not in the local Hugging Face cache and the hub is offline" \
           in res.output
    assert "--depth gt" in res.output and "--depth colour" in res.output
    assert res.output.count("Error:") == 1
    print(f"failed after {time.monotonic() - started:.1f}s")  # seconds, not the minute of hub retries


def test_an_unreachable_hub_is_named_without_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(OSError, match=rf"the hub cannot be reached \(connection to .* refused .*{endpoint}\)"):
        check_dav2_weights(UNCACHED)


def test_a_local_folder_is_not_checked_against_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_dav2_weights(str(tmp_path))  # no error: transformers loads (or rejects) the folder itself
