"""Every component folder follows kubeflow/pipelines-components' layout, and its metadata and README agree
with the code: `component.py`, `metadata.yaml`, `README.md` and `test_component.py` in each folder; the
metadata's name, kfp version and image are the code's; what it says it wraps is what `component.py` calls;
the README's input and output tables are the component's signature; its example compiles."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from components import COMPONENTS
from components._base import BASE_IMAGE

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent.name for p in (ROOT / "components").glob("*/component.py"))
REQUIRED = ("component.py", "metadata.yaml", "README.md", "test_component.py", "__init__.py")
# How the README's tables name the types of kfp's component spec.
TYPES = {"String": "str", "Boolean": "bool", "List": "list", "NUMBER_INTEGER": "int"}


def _pinned(package: str) -> str:
    """The version constraints.txt pins (the one the images and CI install)."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def _component(folder: str):
    return next(c for c in COMPONENTS.values() if c.name == folder.replace("_", "-"))


def _type(spec_io) -> str:
    t = getattr(spec_io, "type", None) or spec_io.parameter_type
    return TYPES.get(t, t.removeprefix("system.").split("@")[0])


def _table(readme: str, heading: str) -> dict[str, str]:
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (\w+) \|", section, re.M)}


def test_every_component_folder_is_complete_and_listed():
    assert FOLDERS == sorted(c.name.replace("-", "_") for c in COMPONENTS.values())
    missing = [f"{f}/{name}" for f in FOLDERS for name in REQUIRED if not (ROOT / "components" / f / name).is_file()]
    assert missing == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_metadata_agrees_with_the_code(folder):
    meta = yaml.safe_load((ROOT / "components" / folder / "metadata.yaml").read_text())
    comp = _component(folder)
    assert meta["name"] == comp.name
    assert meta["tier"] == "core" and meta["stability"] in ("alpha", "beta", "stable")
    pipelines = {d["name"]: d["version"] for d in meta["dependencies"]["kubeflow"]}
    assert _pinned("kfp") in SpecifierSet(pipelines["Pipelines"])
    assert meta["verifiedWith"] == {"kfp": _pinned("kfp"), "image": BASE_IMAGE}
    verified = dt.datetime.fromisoformat(meta["lastVerified"].replace("Z", "+00:00"))
    assert verified.tzinfo is not None and verified <= dt.datetime.now(dt.UTC)  # RFC 3339, not in the future
    assert all(isinstance(t, str) and t for t in meta["tags"])
    source = (ROOT / "components" / folder / "component.py").read_text()
    for dotted in meta["wraps"]:
        module, _, name = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), dotted
        assert re.search(rf"from {re.escape(module)} import .*\b{name}\b", source), f"component.py does not call {dotted}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_readme_tables_are_the_components_signature(folder):
    readme = (ROOT / "components" / folder / "README.md").read_text()
    spec = _component(folder).component_spec
    assert _table(readme, "Inputs") == {n: _type(v) for n, v in spec.inputs.items()}
    assert _table(readme, "Outputs") == {n: _type(v) for n, v in spec.outputs.items()}
    meta = yaml.safe_load((ROOT / "components" / folder / "metadata.yaml").read_text())
    assert all(f"`{w}`" in readme for w in meta["wraps"])


@pytest.mark.parametrize("folder", FOLDERS)
def test_readme_example_compiles(folder, tmp_path):
    readme = (ROOT / "components" / folder / "README.md").read_text()
    code = readme.split("## Example\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    compiled = yaml.safe_load((tmp_path / f"{_component(folder).name}-example.yaml").read_text())
    tasks = compiled["root"]["dag"]["tasks"]
    assert any(t["componentRef"]["name"] == f"comp-{_component(folder).name}" for t in tasks.values()), tasks
