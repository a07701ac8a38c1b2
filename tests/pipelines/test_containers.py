"""The container path with a real engine: `make test-containers` (marker ``containers``; `make test` leaves
these out). Skipped, with the reason, when no Docker engine answers or an image has not been built.

* ``make pin-bases`` against a real registry (Debian's ``docker-registry`` on 127.0.0.1): the digest it
  writes is the one the registry answered for the push, and a pull by that digest gives the same image.
* The pipeline image built by ``make images``: its ``pip freeze`` agrees with constraints.txt for the
  packages that matter, it runs as uid 1000, and the CLI starts on a read-only root file system.
* The training image (on the stand-in CUDA base where the real one cannot be pulled: no GPU kernels run):
  torch, DeepSpeed, vLLM and TRL import as uid 1000 at its lock's versions (images/constraints-gpu.txt),
  and build-data -> sft -> grpo-sif run in it on the CPU with those versions.
* Pipeline steps through kfp's DockerRunner in that image, as uid 1000 (pipelines/run.py:
  ``run_in_containers``): a failing step fails the run (the outcome check itself, without an engine:
  tests/pipelines/test_container_outcomes.py).

The images are found as ``$SIFTHINKER_IMAGE_REGISTRY/NAME:$IMAGE_TAG`` (default: images/bases.env's).
The engine's CLI is ``$DOCKER`` (default ``docker``).
"""

# (no `from __future__ import annotations`: kfp reads the pipeline function's annotations as types)

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sifthinker.cluster.images import read_env

REPO = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("DOCKER", "docker")
BASES = read_env(REPO / "images" / "bases.env")
REGISTRY = os.environ.get("SIFTHINKER_IMAGE_REGISTRY", BASES["IMAGE_REGISTRY"])
TAG = os.environ.get("SIFTHINKER_IMAGE_TAG", BASES["IMAGE_TAG"])
PIPELINE_IMAGE = f"{REGISTRY}/sifthinker:{TAG}"
TRAIN_IMAGE = f"{REGISTRY}/sifthinker-train:{TAG}"
# The packages whose versions decide behaviour: an image must carry exactly the CI pins of these.
PINNED = ("torch", "torchvision", "transformers", "trl", "kfp", "mlflow", "kserve")


def _engine_problem() -> str | None:
    if not shutil.which(DOCKER.split()[0]):
        return f"no container engine CLI ({DOCKER}) on PATH"
    out = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    return None if out.returncode == 0 else f"no Docker engine answers ({out.stderr.strip()[:200]})"


pytestmark = [pytest.mark.containers, pytest.mark.skipif(bool(_engine_problem()), reason=str(_engine_problem()))]


def docker(*args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {out.stderr}")
    return out


def need_image(ref: str) -> None:
    if docker("image", "inspect", ref, check=False).returncode != 0:
        pytest.skip(f"{ref} is not built (make images IMAGES=... IMAGE_REGISTRY={REGISTRY})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1 (plain http: Docker treats 127.0.0.0/8 as insecure)."""
    exe = shutil.which("docker-registry")
    if not exe:
        pytest.skip("no docker-registry binary (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (root / "config.yml").write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                                     f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pin_bases_writes_the_digest_the_registry_answered(registry, tmp_path):
    # A small image of its own (docker import of one file), pushed under a tag like a base's.
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "marker").write_text(str(time.time()))
    ref = f"{registry}/pintest/base:1.0"
    tar = subprocess.run(["tar", "-C", str(tmp_path / "rootfs"), "-c", "."], capture_output=True, check=True).stdout
    imported = subprocess.run([DOCKER, "import", "-", ref], input=tar, capture_output=True, check=True)
    image_id = imported.stdout.decode().strip()
    pushed = docker("push", ref).stdout
    pushed_digest = pushed.split("digest: ")[1].split()[0]
    bases = tmp_path / "bases.env"
    tools = ["docker"] + (["skopeo"] if shutil.which("skopeo") else [])
    for tool in tools:
        bases.write_text(f"# test\nPYTHON_BASE={ref}\nIMAGE_TAG=0.1.0\n")
        out = subprocess.run(["make", "-s", "pin-bases", f"BASES={bases}", f"PIN_TOOL={tool}", f"DOCKER={DOCKER}"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (tool, out.stdout, out.stderr)
        assert read_env(bases) == {"PYTHON_BASE": f"{ref}@{pushed_digest}", "IMAGE_TAG": "0.1.0"}, tool
    # A pull by the pinned digest gives the same image.
    docker("rmi", ref)
    docker("pull", f"{ref.rsplit(':', 1)[0]}@{pushed_digest}")
    assert docker("image", "inspect", "--format", "{{.Id}}", f"{ref.rsplit(':', 1)[0]}@{pushed_digest}").stdout.strip() \
        == image_id
    # A tag the registry does not have is an error, and the file stays as it was.
    bases.write_text(f"PYTHON_BASE={registry}/pintest/base:missing\n")
    out = subprocess.run(["make", "-s", "pin-bases", f"BASES={bases}", f"PIN_TOOL={tools[-1]}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "error:" in out.stderr
    assert bases.read_text() == f"PYTHON_BASE={registry}/pintest/base:missing\n"


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.split(";")[0].strip()
    return pins


def test_pipeline_image_installs_the_ci_pins_and_runs_as_uid_1000():
    need_image(PIPELINE_IMAGE)
    frozen = {}
    for line in docker("run", "--rm", "--entrypoint", "pip", PIPELINE_IMAGE, "freeze").stdout.splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            frozen[name.lower()] = version
    pins = _constraints()
    for pkg in PINNED:
        # 2.14.1+cpu (PyTorch's CPU index) satisfies the pin 2.14.1: the local version label is the build.
        assert frozen.get(pkg, "").split("+")[0] == pins[pkg], (pkg, frozen.get(pkg), pins[pkg])
    ident = docker("run", "--rm", "--entrypoint", "id", PIPELINE_IMAGE).stdout
    assert ident.startswith("uid=1000(") and "gid=0(" in ident, ident


@pytest.mark.parametrize("name", ["sifthinker", "sifthinker-serve-cpu", "sifthinker-mlflow"])
def test_the_image_users_home_is_its_own(name):
    """HOME belongs to the image's user: the build's checks ran as root with that HOME (MLflow writes
    ~/.config/mlflow there on import) and left it root's, unwritable for uid 1000."""
    ref = f"{REGISTRY}/{name}:{TAG}"
    need_image(ref)
    out = docker("run", "--rm", "--entrypoint", "sh", ref, "-c", 'touch "$HOME/probe" && echo ok', check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_cli_starts_on_a_read_only_root_file_system():
    """As a pod with readOnlyRootFilesystem: only /tmp (an emptyDir) and the KFP output folders writable."""
    need_image(PIPELINE_IMAGE)
    out = docker("run", "--rm", "--read-only", "--tmpfs", "/tmp", PIPELINE_IMAGE, "sifthinker", "--help", check=False)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    # KFP v2's launcher writes outputs under /s3, /minio, /gcs: the image user owns them.
    probe = "for d in /s3 /minio /gcs; do touch $d/x && echo ok $d; done"
    out = docker("run", "--rm", "--entrypoint", "sh", PIPELINE_IMAGE, "-c", probe)
    assert out.stdout.split() == ["ok", "/s3", "ok", "/minio", "ok", "/gcs"]


def _two_steps(image: str, env: dict[str, str]):
    """build-data -> validate-data: the pipeline's first two components, in ``image`` with ``env``."""
    from kfp import dsl

    from components import build_data, validate_data

    @dsl.pipeline(name="two-steps")
    def two_steps(recipe: str):
        data = build_data(recipe=recipe)
        checked = validate_data(recipe=recipe, train_data=data.outputs["train_data"],
                                eval_data=data.outputs["eval_data"])
        for task in (data, checked):
            task.set_container_image(image)
            for k, v in env.items():
                task.set_env_variable(k, v)

    return two_steps


def test_pipeline_steps_run_in_the_image_and_a_failing_step_fails_the_run(tmp_path):
    """build-data and validate-data of the local recipe through kfp's DockerRunner, each in the pipeline
    image as uid 1000, nothing mounted but what kfp mounts (the pipeline root and its workspace). A recipe
    that build-data rejects must fail the run, not pass it off as a success."""
    need_image(PIPELINE_IMAGE)
    import dataclasses

    from pipelines.run import StepFailed, run_in_containers, step_environments
    from sifthinker.config.run_config import RunConfig
    from sifthinker.runtime.stages import recipe_parameter

    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_train=16, num_eval=4))
    env = step_environments(cfg, {}, "containers-test")["build-data"]
    run_dir = run_in_containers(_two_steps(PIPELINE_IMAGE, env), {"recipe": recipe_parameter(cfg)}, tmp_path / "root")
    steps = sorted(p.name for p in run_dir.iterdir() if p.is_dir())
    assert steps == ["build-data", "validate-data"]
    train = run_dir / "build-data" / "train_data" / "records.json"
    assert len(json.loads(train.read_text())) == 16
    for step in steps:  # written by the step itself, as the image's user
        assert (run_dir / step / "executor_output.json").stat().st_uid == 1000

    bad = recipe_parameter(cfg).replace('"source": "synthetic"', '"source": "no-such-source"')
    assert bad != recipe_parameter(cfg)
    with pytest.raises(StepFailed):
        run_in_containers(_two_steps(PIPELINE_IMAGE, env), {"recipe": bad}, tmp_path / "root2")


def _env_probe(image: str, envs: dict[str, dict[str, str]]):
    """One task per pipeline step, in ``image``, with that step's environment (as the pipeline sets it);
    each returns the environment its process sees."""
    from kfp import dsl

    @dsl.component(base_image=image, install_kfp_package=False)
    def probe(step: str) -> str:
        import json
        import os

        return json.dumps({"step": step, "env": dict(os.environ)})

    @dsl.pipeline(name="env-probe")
    def env_probe():
        for step, env in envs.items():
            task = probe(step=step)
            for k, v in env.items():
                task.set_env_variable(k, v)

    return env_probe


def test_a_step_container_sees_only_what_step_access_gives_it(tmp_path, monkeypatch):
    """Every step's environment of a container run (pipelines/run.py, step_environments: the cluster's
    secrets, least privilege) reaches its container, and nothing else does: not this process's AWS or
    MLflow settings. Checked from inside containers of the pipeline image, against the image's own ENV."""
    need_image(PIPELINE_IMAGE)
    from pipelines.run import run_in_containers, step_environments
    from sifthinker.cluster.local_platform import with_secret_map
    from sifthinker.config.run_config import RunConfig

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "HF_TOKEN"):
        monkeypatch.setenv(k, "ambient-must-not-leak")
    cfg = with_secret_map(RunConfig.load(REPO / "recipes" / "cluster-local.yaml"))
    secrets = {"sifthinker-mlflow": {"tracking-uri": "http://127.0.0.1:1"},
               "sifthinker-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "endpoint-url": "http://x:9"}}
    envs = step_environments(cfg, secrets, "probe-run")
    image_env = dict(e.split("=", 1) for e in json.loads(docker("image", "inspect", "-f", "{{json .Config.Env}}",
                                                               PIPELINE_IMAGE).stdout))
    run_dir = run_in_containers(_env_probe(PIPELINE_IMAGE, envs), {}, tmp_path / "root")
    seen = {}
    for out in run_dir.rglob("executor_output.json"):
        got = json.loads(json.loads(out.read_text())["parameterValues"]["Output"])
        seen[got["step"]] = got["env"]
    assert set(seen) == set(envs)
    # set by the engine (HOSTNAME), the step's shell (PWD) and kfp's executor for itself (_KFP_RUNTIME)
    own = {"HOSTNAME", "PWD", "_KFP_RUNTIME"}
    for step, env in seen.items():
        extra = {k: v for k, v in env.items() if k not in image_env and k not in own}
        assert extra == envs[step], step
        assert "ambient-must-not-leak" not in env.values(), step


@pytest.mark.parametrize("name", ["sifthinker-serve-cpu", "sifthinker-serve"])
def test_the_serve_images_work_folder_is_writable_on_a_read_only_root(name):
    """The serve image with nothing set but a /tmp (an emptyDir in a pod): its work folder (model cache,
    logs) must be writable, as it was not when it defaulted to `work` under WORKDIR."""
    ref = f"{REGISTRY}/{name}:{TAG}"
    need_image(ref)
    probe = ("from sifthinker.config.run_config import RunConfig; p = RunConfig().work_path / 'models'; "
             "p.mkdir(parents=True); (p / 'x').write_text('ok'); print(p)")
    out = docker("run", "--rm", "--read-only", "--tmpfs", "/tmp", ref, "python", "-c", probe, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("/tmp/")


def _final_base_arg(dockerfile: Path) -> str:
    """The build argument the final stage is FROM (``FROM ${PYTHON_BASE}`` -> ``PYTHON_BASE``)."""
    import re

    froms = re.findall(r"^FROM \$\{(\w+)\}", dockerfile.read_text(), re.M)
    return froms[-1]


@pytest.mark.parametrize("name", ["sifthinker", "sifthinker-serve-cpu", "sifthinker-mlflow", "sifthinker-postgres"])
def test_an_image_is_built_on_exactly_its_pinned_base(name):
    """The base layers of a built image are those of the digest the bases file pins (``make pin-bases``):
    built on the pin, not on whatever the tag pointed at. The bases file is ``$SIFTHINKER_BASES``
    (default images/bases.env; `make test-containers` passes its BASES)."""
    import re

    ref = f"{REGISTRY}/{name}:{TAG}"
    need_image(ref)
    bases = read_env(Path(os.environ.get("SIFTHINKER_BASES") or REPO / "images" / "bases.env"))
    dockerfile = next(p for p in sorted((REPO / "images").glob("Dockerfile*"))
                      if not p.name.endswith(".dockerignore")
                      and re.search(rf'^LABEL io.sifthinker.image="{re.escape(name)}"', p.read_text(), re.M))
    base = bases[_final_base_arg(dockerfile)]
    if "@sha256:" not in base:
        pytest.skip(f"{base} is not pinned (make pin-bases BASES=...)")
    docker("pull", "-q", base)  # by its digest
    layers = json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", base).stdout)
    built = json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", ref).stdout)
    assert built[: len(layers)] == layers, f"{ref} is not built on {base}"


def _train_steps(image: str, envs: dict[str, dict[str, str]]):
    """build-data -> sft -> grpo-sif: the pipeline's training components, in ``image``, each with its step's
    environment as the pipeline gives it (grpo-sif's picks the image's vLLM environment)."""
    from kfp import dsl

    from components import build_data, grpo_sif, sft

    @dsl.pipeline(name="train-steps")
    def train_steps(recipe: str):
        data = build_data(recipe=recipe)
        tuned = sft(recipe=recipe, pipeline_run="train-image", train_data=data.outputs["train_data"])
        rl = grpo_sif(recipe=recipe, pipeline_run="train-image", train_data=data.outputs["train_data"],
                      sft_model=tuned.outputs["model"])
        for step, task in (("build-data", data), ("sft", tuned), ("grpo-sif", rl)):
            task.set_container_image(image)
            for k, v in envs[step].items():
                task.set_env_variable(k, v)

    return train_steps


STACK_PROBE = ("import json, os, sys, torch, torchvision, deepspeed, trl, transformers, sifthinker\n"
               "try:\n    import vllm; v = vllm.__version__\nexcept ImportError:\n    v = None\n"
               "print(json.dumps({'python': sys.executable, 'uid': os.getuid(), 'torch': torch.__version__.split('+')[0], "
               "'torchvision': torchvision.__version__.split('+')[0], "
               "'deepspeed': deepspeed.__version__, 'trl': trl.__version__, 'transformers': transformers.__version__, "
               "'vllm': v}))")


def test_the_training_image_imports_its_stack_and_trains_with_its_own_pins(tmp_path):
    """The GPU steps' image has two Python environments (images/Dockerfile.train: vLLM 0.31 caps transformers
    below the 5.18 that TRL's SFT of vision data needs; the first SFT in a one-environment image failed on
    that): the default one at CI's pins, and the vLLM one at its lock's (images/constraints-gpu.txt). Both
    import torch, DeepSpeed, TRL (and vLLM) as uid 1000 at those versions; the image's PATH is the one the
    pipeline spells out for grpo-sif; and build-data -> sft -> grpo-sif train in it, grpo-sif (with
    grpo.use_vllm) in the vLLM environment through the environment the pipeline gives it. On the stand-in
    base there is no CUDA: torch's CUDA build runs on the CPU (rollouts fall back to generate), which proves
    the Python layers, not the GPU kernels."""
    need_image(TRAIN_IMAGE)
    import dataclasses

    from pipelines.run import run_in_containers, step_environments
    from sifthinker.cluster.gpu_lock import read_pins
    from sifthinker.cluster.step_access import GPU_IMAGE_PATH
    from sifthinker.config.run_config import RunConfig
    from sifthinker.runtime.stages import recipe_parameter

    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, num_train=16, num_eval=4),
        model=dataclasses.replace(cfg.model, tiny=dataclasses.replace(
            cfg.model.tiny, hidden_size=32, intermediate_size=64, pretrain_steps=0)),
        sft=dataclasses.replace(cfg.sft, epochs=1),
        grpo=dataclasses.replace(cfg.grpo, num_items=2, num_generations=2, per_device_batch_size=2,
                                 max_completion_length=32, epochs=1, use_vllm=True),
        registry=dataclasses.replace(cfg.registry, tracking_uri="sqlite:////tmp/mlflow.db"))
    envs = step_environments(cfg, {}, "train-image-test")
    assert "PATH" in envs["grpo-sif"] and "PATH" not in envs["sft"]

    image_path = json.loads(docker("image", "inspect", TRAIN_IMAGE, "--format", "{{json .Config.Env}}").stdout)
    (path,) = [e.split("=", 1)[1] for e in image_path if e.startswith("PATH=")]
    assert set(path.split(":")) <= set(GPU_IMAGE_PATH.split(":")), (path, GPU_IMAGE_PATH)
    for env, lock in (({}, REPO / "constraints.txt"), (envs["grpo-sif"], REPO / "images" / "constraints-gpu.txt")):
        flags = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        out = docker("run", "--rm", *flags, "--entrypoint", "sh", TRAIN_IMAGE, "-c", 'exec python -c "$0"', STACK_PROBE).stdout
        seen = json.loads(out.strip().splitlines()[-1])
        pins = read_pins(lock)
        assert seen.pop("uid") == 1000
        python = seen.pop("python")
        if seen["vllm"] is None:
            seen.pop("vllm")
        assert seen == {k: pins[k] for k in seen}, (python, seen)
        assert ("vllm" in seen) == bool(env), python

    run_dir = run_in_containers(_train_steps(TRAIN_IMAGE, envs), {"recipe": recipe_parameter(cfg)}, tmp_path / "root")
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["build-data", "grpo-sif", "sft"]
    # each model was saved by its environment's transformers: sft by CI's, grpo-sif by the vLLM lock's
    wrote = {"sft": read_pins(REPO / "constraints.txt")["transformers"],
             "grpo-sif": read_pins(REPO / "images" / "constraints-gpu.txt")["transformers"]}
    for step, version in wrote.items():
        saved = run_dir / step / "model"
        assert list(saved.glob("*.safetensors")), sorted(saved.iterdir())
        assert json.loads((saved / "config.json").read_text())["transformers_version"] == version, step
        assert (run_dir / step / "executor_output.json").stat().st_uid == 1000
