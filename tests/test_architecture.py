"""The house rules, checked on the source: layering, no import cycles, small modules, one list of names.

The import graph is read from the source with ``ast`` (every ``import`` statement, also those inside
functions, since a lazy import is still a dependency), over ``src/``, ``components/`` and ``pipelines/``.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sifthinker": ROOT / "src", "components": ROOT, "pipelines": ROOT}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for pkg, base in PACKAGES.items():
        for path in sorted((base / pkg).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if "test_component" in parts[-1] or parts[-1] == "conftest":
                continue  # tests are not part of the import graph of the product
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module, or a module plus an attribute) starts with."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, path in known.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" for a in node.names]
            deps |= {r for t in targets if (r := _resolve(t, known))}
        deps.discard(mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself: a two-module cycle and a self-contained chain."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph(modules())
    assert len(graph) > 50  # the walk found the code (a broken walk must not pass vacuously)
    assert cycles(graph) == []


# The library's parts and what each may import (docs/architecture.md, "The parts"). A part is a package of
# src/sifthinker (or names.py, the leaf every part may use). The map must stay acyclic; a new part must be
# placed in it before its first import is allowed.
ALLOWED: dict[str, set[str]] = {
    "names": set(),
    "method": set(),
    "config": {"names"},
    "storage": {"names"},
    "scenes": {"method", "names"},
    "rewards": {"method", "names"},
    "registry": {"config", "storage", "names"},
    "runtime": {"config", "registry", "names"},
    "cluster": {"config", "storage", "names"},
    "data": {"config", "method", "names", "runtime", "scenes", "storage"},
    "model": {"config", "data", "method", "names", "registry", "scenes", "storage"},
    "training": {"cluster", "config", "data", "method", "model", "names", "registry", "rewards", "runtime", "storage"},
    "serving": {"cluster", "config", "data", "method", "model", "names", "registry", "storage"},
    "evaluation": {"config", "data", "method", "model", "names", "registry", "rewards", "runtime", "serving",
                   "storage"},
}
ALLOWED["cli"] = set(ALLOWED)  # the console script is the top: it may use every part


def part_of(module: str) -> str | None:
    """``sifthinker.<part>...`` -> part; None for the package root and modules outside the library."""
    parts = module.split(".")
    return parts[1] if parts[0] == "sifthinker" and len(parts) > 1 else None


def test_every_part_is_in_the_map_and_the_map_has_no_cycle():
    on_disk = {p.stem if p.is_file() else p.name for p in (ROOT / "src" / "sifthinker").iterdir()
               if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert on_disk == set(ALLOWED)
    assert cycles({k: v - {k} for k, v in ALLOWED.items()}) == []


def test_each_part_imports_only_the_parts_below_it():
    graph = import_graph(modules())
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                 if (src := part_of(m)) and (dst := part_of(d)) and dst != src and dst not in ALLOWED[src])
    assert bad == []


def test_the_direction_check_catches_an_upward_import():
    """The checker itself: a made-up upward arrow (storage -> training) is reported."""
    graph = {"sifthinker.storage.locations": {"sifthinker.training.runner", "sifthinker.names"}}
    bad = [(m, d) for m, deps in graph.items() for d in deps if part_of(d) not in ALLOWED[part_of(m)] | {part_of(m)}]
    assert bad == [("sifthinker.storage.locations", "sifthinker.training.runner")]


def test_test_modules_never_import_each_other():
    """Shared test code lives in a conftest.py (fixtures) or a helper module at the tests' root, never in
    another test module, and a folder's own helpers are not imported from another folder."""
    tests = ROOT / "tests"
    local = {p.stem: p.parent for p in tests.rglob("*.py")}
    bad = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in local and (top.startswith("test_") or local[top] not in (tests, path.parent)):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_the_library_never_imports_the_kfp_layer():
    graph = import_graph(modules())
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("components", "pipelines"))
           for m, deps in graph.items() if m.startswith("sifthinker")}
    assert {m: d for m, d in bad.items() if d} == {}
    pattern = re.compile(r"^\s*(from|import) (components|pipelines)([ .]|$)", re.M)
    assert [p for p in (ROOT / "src").rglob("*.py") if pattern.search(p.read_text())] == []


def test_the_product_never_names_the_shared_folder():
    """Only tests and CI may read ../shared (through CRD_DIR): a user's clone has nothing beside it."""
    hits = []
    for folder in ("src", "components", "pipelines", "images", "manifests", "recipes"):
        for p in (ROOT / folder).rglob("*"):
            if p.is_file() and p.suffix in {".py", ".yaml", ".yml", ".json", ".toml", ""}:
                if re.search(r"\.\./shared|shared/crds", p.read_text(errors="ignore")):
                    hits.append(str(p.relative_to(ROOT)))
    hits += [f for f in ("Makefile", "pyproject.toml") if "shared/" in (ROOT / f).read_text()]
    assert hits == []


@pytest.mark.parametrize("mod", sorted(modules()))
def test_modules_are_small(mod):
    path = modules()[mod]
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path} is over {MAX_LINES} lines: split it"


def test_components_are_thin_and_wrap_the_library():
    for path in sorted(ROOT.glob("components/*/component.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 60, path
        assert "from sifthinker.runtime.stages import" in text and "with stage(Stage." in text, path


def test_stage_names_agree_with_components_and_pipeline():
    from components import COMPONENTS
    from sifthinker.names import STAGES, Stage

    assert list(COMPONENTS) == list(STAGES)
    assert [c.name for c in COMPONENTS.values()] == list(STAGES)  # KFP derives task names from functions
    assert [s.value for s in Stage] == list(STAGES)


def test_reward_names_have_one_source():
    from sifthinker.config.run_config import GRPOConfig
    from sifthinker.names import REWARDS
    from sifthinker.rewards.reward_funcs import REWARD_FUNCS

    assert list(GRPOConfig().reward_weights) == list(REWARDS)
    assert [n for n in REWARD_FUNCS if n != "total"] == list(REWARDS)


def test_environment_variable_names_are_spelled_once():
    """Product code names SIFTHINKER_* variables only through sifthinker.names.Env."""
    from sifthinker.names import Env

    names = {e.value for e in Env if e.value.startswith("SIFTHINKER_")}
    offenders = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "components").rglob("component.py"),
                 *(ROOT / "pipelines").rglob("*.py")]:
        if path.name == "names.py":
            continue
        for name in names:
            if re.search(rf"[\"']{name}[\"']", path.read_text()):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_the_readme_documents_every_environment_variable():
    from sifthinker.names import Env

    readme = (ROOT / "README.md").read_text()
    assert [e.value for e in Env if f"| `{e.value}` |" not in readme] == []


def test_every_import_of_the_library_resolves():
    """Lazy imports (inside functions) run only on the paths that need them: resolve every one here, so a
    moved module or renamed name fails this test, not a user's rarely taken path."""
    import importlib

    unresolved = []
    for mod, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sifthinker") and not node.level:
                target = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(target, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ModuleNotFoundError:
                            unresolved.append(f"{mod}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sifthinker"):
                        importlib.import_module(alias.name)
    assert unresolved == []


def test_no_makefile_assignment_carries_a_comment():
    """make keeps the spaces before an inline comment in the value (`X ?= a  # why` is "a  "): a registry
    named that way gave every image name a blank in the middle, and the container suite skipped them all."""
    bad = [line for line in (ROOT / "Makefile").read_text().splitlines()
           if re.match(r"^[A-Z_]+\s*[?:+]?=", line) and "#" in line]
    assert bad == []
