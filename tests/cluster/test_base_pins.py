"""`make pin-bases` (sifthinker.cluster.images): reading bases files, parsing references, writing pins.

The resolver is a dict here; tests/pipelines/test_containers.py resolves against a real registry."""

from __future__ import annotations

import pytest

from sifthinker.cluster.images import BaseImageError, pin_bases, read_env, split_ref

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_split_ref_keeps_a_registry_port_in_the_name():
    assert split_ref("python:3.11-slim") == ("python", "3.11-slim", None)
    assert split_ref("127.0.0.1:5055/standin/python:3.11") == ("127.0.0.1:5055/standin/python", "3.11", None)
    assert split_ref(f"ghcr.io/a/uv:0.8.22@{D1}") == ("ghcr.io/a/uv", "0.8.22", D1)
    assert split_ref("localhost:5000/x") == ("localhost:5000/x", None, None)
    for bad in ("", "Python:3", "a b:1", "x:1@sha256:short"):
        with pytest.raises(BaseImageError):
            split_ref(bad)


def test_pin_writes_the_resolved_digests_and_keeps_everything_else(tmp_path):
    f = tmp_path / "bases.env"
    f.write_text(f"# comment\nPYTHON_BASE=python:3.11\nUV_IMAGE=ghcr.io/a/uv:0.8@{D2}\nIMAGE_TAG=0.1.0\n")
    asked = []
    answers = {"python:3.11": D1, "ghcr.io/a/uv:0.8": D1}
    pinned = pin_bases(f, lambda ref: asked.append(ref) or answers[ref])
    assert asked == ["python:3.11", "ghcr.io/a/uv:0.8"]  # an old digest is re-resolved from the tag, not trusted
    assert pinned == {"PYTHON_BASE": f"python:3.11@{D1}", "UV_IMAGE": f"ghcr.io/a/uv:0.8@{D1}"}
    assert f.read_text() == f"# comment\nPYTHON_BASE=python:3.11@{D1}\nUV_IMAGE=ghcr.io/a/uv:0.8@{D1}\nIMAGE_TAG=0.1.0\n"
    assert read_env(f)["IMAGE_TAG"] == "0.1.0"


def test_nothing_is_written_unless_every_base_resolves(tmp_path):
    f = tmp_path / "bases.env"
    text = "PYTHON_BASE=python:3.11\nPOSTGRES_BASE=postgres:16\n"
    f.write_text(text)

    def resolve(ref):
        if ref.startswith("postgres"):
            raise BaseImageError("unreachable")
        return D1

    with pytest.raises(BaseImageError, match="unreachable"):
        pin_bases(f, resolve)
    with pytest.raises(BaseImageError, match="not a sha256 digest"):
        pin_bases(f, lambda ref: "latest")
    assert f.read_text() == text


def test_bad_bases_files_are_clear_errors(tmp_path):
    f = tmp_path / "bases.env"
    f.write_text("PYTHON_BASE=python\n")
    with pytest.raises(BaseImageError, match="no tag to resolve"):
        pin_bases(f, lambda ref: D1)
    f.write_text("IMAGE_TAG=1\n")
    with pytest.raises(BaseImageError, match="no base images"):
        pin_bases(f, lambda ref: D1)
    f.write_text("not a line\n")
    with pytest.raises(BaseImageError, match="expected KEY=VALUE"):
        read_env(f)
