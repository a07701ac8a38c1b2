"""The container images, read from their Dockerfiles (no Docker engine here: nothing is built).

Every base image comes from images/bases.env, the one place that names them (a tag, or a tag with the
digest `make pin-bases` resolved: tests/pipelines/test_containers.py checks that against a real registry); every
image runs as a non-root user and bakes in no secret; every build context is allow-listed by a
.dockerignore; and every image that the recipes, the config defaults, the components or the manifests
name is built by some Dockerfile. `make images` is run with a stand-in for docker (``echo``) to check the
commands it would run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from sifthinker.config.platform_config import PlatformConfig
from sifthinker.config.run_config import RunConfig, ServingConfig

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
TAGGED = re.compile(r"^[a-z0-9./_-]+:[\w.-]+(@sha256:[0-9a-f]{64})?$")  # NAME:TAG, pinned or not yet
SECRETISH = re.compile(r"(^|_)(TOKEN|PASSWORD|SECRET|SECRET_ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)($|_)", re.I)


def bases() -> dict[str, str]:
    out = {}
    for line in (IMAGES / "bases.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def dockerfiles() -> list[Path]:
    return sorted(p for p in IMAGES.glob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not cur:
            continue
        cur += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            if cur.strip():
                word, _, rest = cur.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def built_images() -> dict[str, Path]:
    """image reference -> the Dockerfile that builds it (as `make images` names it)."""
    b, out = bases(), {}
    for df in dockerfiles():
        labels = [re.search(r'io\.sifthinker\.image="([^"]+)"', args) for op, args in instructions(df) if op == "LABEL"]
        names = [m.group(1) for m in labels if m]
        assert len(names) == 1, f"{df.name}: one LABEL io.sifthinker.image, got {names}"
        out[f"{b['IMAGE_REGISTRY']}/{names[0]}:{b['IMAGE_TAG']}"] = df
    return out


def test_bases_are_named_by_tag_in_one_place():
    b = bases()
    base_keys = {k for k in b if k.endswith(("_BASE", "_IMAGE"))}
    assert base_keys and all(TAGGED.match(b[k]) for k in base_keys), {k: b[k] for k in base_keys}
    used = set()
    for df in dockerfiles():
        ins = instructions(df)
        args = {a.split("=")[0]: a for op, a in ins if op == "ARG"}
        froms = [a.split()[0] for op, a in ins if op == "FROM"]
        assert froms, df.name
        for ref in froms:
            m = re.fullmatch(r"\$\{(\w+)\}", ref)
            assert m, f"{df.name}: FROM {ref} must be a build argument from images/bases.env"
            assert m.group(1) in base_keys, f"{df.name}: {m.group(1)} is not in bases.env"
            assert "=" not in args[m.group(1)], f"{df.name}: ARG {m.group(1)} has a default (an unpinned tag)"
            used.add(m.group(1))
    assert used == base_keys  # no stale pin


@pytest.mark.parametrize("df", dockerfiles(), ids=lambda p: p.name)
def test_each_image_runs_as_non_root_and_bakes_in_no_secret(df):
    ins = instructions(df)
    users = [a for op, a in ins if op == "USER"]
    assert users, f"{df.name}: no USER (would run as root)"
    assert users[-1].split(":")[0] not in ("0", "root"), f"{df.name}: the final USER is root"
    for op, a in ins:
        if op in ("ENV", "ARG"):
            for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", a):
                assert not (SECRETISH.search(key) and value.strip('"')), f"{df.name}: {op} {key} has a value"
        if op in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.pem\b|id_rsa|kubeconfig|credentials", a), f"{df.name}: {op} {a}"
    ignore = df.with_name(df.name + ".dockerignore")
    assert ignore.is_file(), f"{df.name}: no {ignore.name} beside it"
    lines = [ln for ln in ignore.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "**", f"{ignore.name} must start by excluding everything, then allow-list"
    copied = {a.split()[0] for op, a in ins if op == "COPY" and not a.startswith("--from")}
    for src in copied:  # what the Dockerfile copies is allowed by its .dockerignore
        assert f"!{src}" in lines or f"!{src}/**" in lines, f"{df.name}: COPY {src} is excluded by {ignore.name}"


def test_the_root_dockerignore_allow_lists_the_context():
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "**" and "!.env" not in lines and not any(ln.startswith("!.git") for ln in lines)


def _named_images() -> dict[str, str]:
    """Every image something names -> who names it."""
    named = {PlatformConfig().image: "PlatformConfig.image", PlatformConfig().gpu_image: "PlatformConfig.gpu_image",
             ServingConfig().runtime_image: "ServingConfig.runtime_image"}
    from components._base import BASE_IMAGE

    named[BASE_IMAGE] = "components/_base.py"
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        cfg = RunConfig.load(recipe)
        for img in (cfg.platform.image, cfg.platform.gpu_image, cfg.serving.runtime_image):
            named[img] = recipe.name
    for path in sorted((REPO / "manifests").rglob("*.yaml")):
        for img in re.findall(r"^\s*(?:-\s+)?image:\s*[\"']?([^\s\"']+)", path.read_text(), re.M):
            named[img] = str(path.relative_to(REPO))
        for img in re.findall(r"value:\s*(ghcr\.io/\S+)", path.read_text()):  # images set by overlay patches
            named[img] = str(path.relative_to(REPO))
    return named


def test_every_image_named_anywhere_is_built_by_a_dockerfile():
    import sys

    sys.path.insert(0, str(REPO))
    named, built = _named_images(), built_images()
    assert len(named) >= 5
    missing = {img: who for img, who in named.items() if img not in built}
    assert missing == {}, f"named but built by no Dockerfile: {missing}"
    # and the other way round: nothing is built that nobody uses
    assert set(built) - set(named) == set(), set(built) - set(named)


def test_make_images_builds_every_dockerfile_with_pinned_bases():
    """`make images` with a stand-in for docker that prints each command instead of running it."""
    out = subprocess.run(["make", "-s", "images", "DOCKER=echo docker", "PUSH=1"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    builds = [shlex.split(ln) for ln in out.stdout.splitlines() if ln.startswith("docker build")]
    pushes = [ln.split()[-1] for ln in out.stdout.splitlines() if ln.startswith("docker push")]
    built = built_images()
    assert sorted(b[b.index("-t") + 1] for b in builds) == sorted(built) == sorted(pushes)
    for b in builds:
        df = REPO / b[b.index("-f") + 1]
        assert built[b[b.index("-t") + 1]] == df and b[-1] == "."
        args = dict(b[i + 1].split("=", 1) for i, x in enumerate(b) if x == "--build-arg")
        assert args == {k: v for k, v in bases().items() if k.endswith(("_BASE", "_IMAGE"))} | {
            "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
        assert "--secret" not in b  # no CA bundle unless one is given
    retagged = subprocess.run(["make", "-s", "images", "DOCKER=echo docker", "IMAGE_REGISTRY=registry.example.com/ml",
                               "IMAGE_TAG=1.2.3"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "-t registry.example.com/ml/sifthinker-train:1.2.3" in retagged.stdout


def test_make_images_takes_other_bases_a_ca_bundle_and_a_subset(tmp_path):
    """BASES= swaps the bases (the stand-ins of `make base-images`), CA_BUNDLE= becomes a BuildKit secret
    (never a build argument: it would stay in the image's history), IMAGES= builds only those images."""
    standin = tmp_path / "bases.env"
    standin.write_text("PYTHON_BASE=127.0.0.1:5055/standin/python:3.11-slim-bookworm\n")
    out = subprocess.run(["make", "-s", "images", "DOCKER=echo docker", f"BASES={standin}", "CA_BUNDLE=/etc/ca.pem",
                          "IMAGES=sifthinker sifthinker-mlflow", "TORCH_INDEX_URL="], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    builds = [shlex.split(ln) for ln in out.stdout.splitlines() if ln.startswith("docker build")]
    assert sorted(b[b.index("-t") + 1].rsplit("/", 1)[1] for b in builds) == ["sifthinker-mlflow:0.1.0",
                                                                             "sifthinker:0.1.0"]
    for b in builds:
        args = dict(b[i + 1].split("=", 1) for i, x in enumerate(b) if x == "--build-arg")
        assert args["PYTHON_BASE"] == "127.0.0.1:5055/standin/python:3.11-slim-bookworm"
        assert args["TORCH_INDEX_URL"] == "" and args["UV_IMAGE"] == bases()["UV_IMAGE"]  # the rest as before
        assert b[b.index("--secret") + 1] == "id=ca-bundle,src=/etc/ca.pem"


@pytest.mark.parametrize("df", dockerfiles(), ids=lambda p: p.name)
def test_no_dockerfile_needs_a_registry_the_bases_do_not_name(df):
    """A `# syntax=` line makes BuildKit pull a frontend image from Docker Hub (fails on an air-gapped site);
    kubectl's download (dl.k8s.io) is gone: the deploy step applies with the Kubernetes Python client."""
    text = df.read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M), df.name
    assert "dl.k8s.io" not in text and "download.pytorch.org" not in text.replace(
        "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu", ""), df.name


@pytest.mark.parametrize("recipe", ["local.yaml", "qwen2.5-vl-7b-8gpu.yaml"])
def test_the_compiled_pipeline_names_only_images_make_images_builds(recipe, tmp_path):
    """Every executor image in the compiled YAML is one `make images` tags (registry, name and tag from
    images/bases.env), so what a cluster pulls is what was built and pushed."""
    import sys

    import yaml

    sys.path.insert(0, str(REPO))
    from pipelines.run import compile_pipeline

    out = compile_pipeline(RunConfig.load(REPO / "recipes" / recipe), tmp_path / "p.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    executors = docs[0]["deploymentSpec"]["executors"]
    images = {ex["container"]["image"] for ex in executors.values()}
    assert images and images <= set(built_images()), images - set(built_images())
