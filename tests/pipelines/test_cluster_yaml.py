"""Every cluster recipe's compiled pipeline, read the way a cluster runs it.

For each step of the compiled YAML: the environment its pod would start with (the executor's env plus
its ``secretAsEnv`` entries resolved against the site's secrets as the kubelet does: a missing required
key is CreateContainerConfigError, a missing optional key is left out), once with secrets holding only
the required keys (AWS S3: no endpoint, no MLflow login, no hub token) and once with everything
(MinIO-style, with an endpoint). Then the library's own S3 client code (``sifthinker.storage.locations._client``, what
data, benchmark and checkpoint reads use) builds the client for each s3:// URI the step reads, in that
environment only (no AWS config files, no instance metadata): it must carry credentials and the site's
endpoint. Also: no step gets a secret it never uses, every step asks for CPU and memory, and evaluation's
fan-out is capped within training's GPUs.

What a step touches is spelled out here from the recipe, independently of ``sifthinker.cluster.step_access``
(which the compiled YAML comes from), so a wrong declaration there fails here.
"""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.run import compile_pipeline  # noqa: E402
from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.names import STAGES  # noqa: E402

MINIO = "http://minio-service.kubeflow.svc:9000"
# The site's secrets as docs/cluster.md has them created: what every site must have, and the rest.
REQUIRED_ONLY = {
    "sifthinker-s3": {"AWS_ACCESS_KEY_ID": "AKIA-TEST", "AWS_SECRET_ACCESS_KEY": "secret-test"},
    "sifthinker-mlflow": {"tracking-uri": "http://mlflow.sifthinker.svc:5000"},
    "sifthinker-hf": {},  # public models: no token
}
WITH_ENDPOINT = {
    "sifthinker-s3": {**REQUIRED_ONLY["sifthinker-s3"], "endpoint-url": MINIO},
    "sifthinker-mlflow": {**REQUIRED_ONLY["sifthinker-mlflow"], "username": "u", "password": "p"},
    "sifthinker-hf": {"token": "hf_test"},
}
SITES = {"aws-required-keys-only": (REQUIRED_ONLY, None), "minio-with-endpoint": (WITH_ENDPOINT, MINIO)}
S3_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
           "MLFLOW_S3_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"}
MLFLOW_VARS = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
HUB_VARS = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}


def cluster_recipes() -> list[Path]:
    """Every recipe that runs on a cluster (it names secrets for its steps)."""
    return [p for p in sorted((ROOT / "recipes").glob("*.yaml")) if RunConfig.load(p).platform.secrets]


def _hub(name: str | None) -> bool:
    return bool(name) and "://" not in name and not name.startswith(("/", ".")) and name.count("/") == 1


def touches(cfg: RunConfig, step: str) -> tuple[list[str], set[str]]:
    """(s3:// URIs the step's own code reads or writes, the variables it may use), from the recipe."""
    uris: list[str] = []
    used: set[str] = set()
    if step == "build-data":
        parts = cfg.data.sources or [cfg.data]
        uris = [u for p in parts for u in (p.input, p.image_root) if u]
        if cfg.data.depth in ("dav2", "auto") and cfg.depth.provider == "depth-anything-v2" and _hub(cfg.depth.model):
            used |= HUB_VARS
    elif step in ("sft", "grpo-sif", "evaluate"):
        used |= MLFLOW_VARS | (HUB_VARS if _hub(cfg.model.base) else set())
        if step == "grpo-sif":
            uris = [cfg.grpo.checkpoint_dir]
        if step == "evaluate":
            uris = [b.data for b in cfg.eval.benchmarks if b.data]
    elif step in ("gate", "register", "deploy"):
        used |= MLFLOW_VARS
    uris = [u for u in uris if u and u.startswith("s3://")]
    if uris:
        used |= S3_VARS
    return uris, used


class ClusterYaml:
    def __init__(self, path: Path):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        self.spec = docs[0]
        self.k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        self.tasks: dict[str, dict] = {}
        self.loops: list[dict] = []

        def walk(dag: dict) -> None:
            for name, t in dag["tasks"].items():
                if "parameterIterator" in t:
                    self.loops.append(t)
                comp = self.spec["components"][t["componentRef"]["name"]]
                if "dag" in comp:
                    walk(comp["dag"])
                else:
                    self.tasks[name] = t

        walk(self.spec["root"]["dag"])

    def executor_name(self, step: str) -> str:
        return self.tasks[step]["componentRef"]["name"].replace("comp-", "exec-", 1)

    def container(self, step: str) -> dict:
        return self.spec["deploymentSpec"]["executors"][self.executor_name(step)]["container"]

    def secret_entries(self, step: str) -> list[dict]:
        return self.k8s.get(self.executor_name(step), {}).get("secretAsEnv", [])

    def pod_env(self, step: str, secrets: dict[str, dict[str, str]]) -> tuple[dict[str, str], list[str]]:
        """The pod's environment as the kubelet builds it from the executor and the secrets, and why the pod
        would not start (CreateContainerConfigError: a required key the secret lacks)."""
        env = {e["name"]: e["value"] for e in self.container(step).get("env", [])}
        errors = []
        for entry in self.secret_entries(step):
            values = secrets.get(entry["secretName"])
            for m in entry["keyToEnv"]:
                if values is not None and m["secretKey"] in values:
                    env[m["envVar"]] = values[m["secretKey"]]
                elif not entry.get("optional"):
                    errors.append(f"{step}: CreateContainerConfigError: secret {entry['secretName']} has no key "
                                  f"{m['secretKey']!r} ({m['envVar']}), required by the step, optional at the site")
        return env, errors


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[RunConfig, ClusterYaml]]:
    out = {}
    for recipe in cluster_recipes():
        cfg = RunConfig.load(recipe)
        out[recipe.stem] = (cfg, ClusterYaml(compile_pipeline(cfg, tmp_path_factory.mktemp("c") / "p.yaml")))
    return out


def test_there_are_cluster_recipes():
    names = {p.stem for p in cluster_recipes()}
    assert {"qwen2.5-vl-7b-8gpu", "qwen2.5-vl-7b-2x8gpu", "qwen2.5-vl-3b-1gpu"} <= names


def _s3_clients(compiled, secrets):
    """(recipe, step, uri, client) for every s3:// URI a step reads, the client built by the step's own
    storage code (``sifthinker.storage.locations._client``, used for data, benchmarks and checkpoints) in the pod's
    environment only (one client per step: the environment decides it, not the URI)."""
    import boto3

    from sifthinker.storage import locations

    for recipe, (cfg, c) in compiled.items():
        for step in STAGES:
            uris = touches(cfg, step)[0]
            if not uris:
                continue
            with pytest.MonkeyPatch.context() as mp:
                for k, v in c.pod_env(step, secrets)[0].items():
                    mp.setenv(k, v)
                mp.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the first credentials it finds
                client = locations._client()
            for uri in uris:
                yield recipe, step, uri, client


def test_pods_start_with_secrets_holding_only_the_required_keys(compiled):
    """Defect 3: every key required, the endpoint too, which an AWS S3 site leaves out."""
    errors = [f"{recipe}/{e}" for recipe, (_, c) in compiled.items() for step in STAGES
              for e in c.pod_env(step, REQUIRED_ONLY)[1]]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_s3_read_has_credentials(compiled, site, no_ambient_aws):
    """Defect 1: build-data reads s3:// with no credentials at all."""
    secrets, _ = SITES[site]
    seen, missing = 0, []
    for recipe, step, uri, client in _s3_clients(compiled, secrets):
        creds = client._request_signer._credentials
        seen += 1
        if creds is None or not creds.access_key:
            missing.append(f"{recipe}/{step}: reads {uri} without S3 credentials")
    assert seen >= 3 * len(compiled)  # build-data's input and images, the benchmarks
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_s3_read_goes_to_the_sites_endpoint(compiled, site, no_ambient_aws):
    """Defect 2: the secret's endpoint reached MLflow only; the data and benchmark reads went to AWS."""
    secrets, endpoint = SITES[site]
    want = endpoint or "https://s3.amazonaws.com"
    wrong = [f"{recipe}/{step}: {uri} would be read from {client.meta.endpoint_url}, not {want}"
             for recipe, step, uri, client in _s3_clients(compiled, secrets) if client.meta.endpoint_url != want]
    assert not wrong, "\n".join(wrong)


def test_no_step_gets_a_secret_or_key_it_never_uses(compiled):
    """Defect 3's other half: the hub token on gate, register and deploy; credentials beyond the step's needs."""
    extra = [f"{recipe}/{step}: gets {sorted(unused)} from {entry['secretName']} and never uses them"
             for recipe, (cfg, c) in compiled.items() for step in STAGES for entry in c.secret_entries(step)
             if (unused := {m["envVar"] for m in entry["keyToEnv"]} - touches(cfg, step)[1])]
    assert not extra, "\n".join(extra)


def test_optional_keys_are_optional_and_required_ones_required(compiled):
    optional = {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN"}
    for recipe, (_, c) in compiled.items():
        for step in STAGES:
            for entry in c.secret_entries(step):
                for m in entry["keyToEnv"]:
                    assert bool(entry.get("optional")) == (m["envVar"] in optional), (recipe, step, m)


def test_every_step_asks_for_cpu_and_memory(compiled):
    """Defect 1's other half: steps without requests, and a build with more workers than CPUs."""
    bare = [f"{recipe}/{step}" for recipe, (_, c) in compiled.items() for step in STAGES
            if not (c.container(step).get("resources", {}).get("resourceCpuRequest")
                    and c.container(step).get("resources", {}).get("resourceMemoryRequest"))]
    assert not bare, f"steps without CPU/memory requests: {bare}"
    for recipe, (cfg, c) in compiled.items():
        assert float(c.container("build-data")["resources"]["cpuRequest"]) >= cfg.data.workers, recipe


def test_evaluation_fan_out_is_capped_within_training_gpus(compiled):
    """Defect 4: seven benchmarks at once, each with training's 8 GPUs."""
    for recipe, (cfg, c) in compiled.items():
        assert len(c.loops) == 1, recipe
        limit = c.loops[0].get("iteratorPolicy", {}).get("parallelismLimit", 0)
        assert limit > 0, f"{recipe}: evaluation's ParallelFor has no parallelism limit"
        per_step = int(c.container("evaluate").get("resources", {}).get("accelerator", {}).get("resourceCount", 0))
        training = max(int(c.container(s).get("resources", {}).get("accelerator", {}).get("resourceCount", 0))
                       for s in ("sft", "grpo-sif")) or cfg.platform.gpu.count * cfg.platform.nodes
        at_once = per_step * min(limit, len(cfg.eval.benchmarks))
        assert at_once <= training, f"{recipe}: evaluation asks {at_once} GPUs at once, training {training}"
        if "7b" in recipe:
            assert 1 <= per_step <= 2, f"{recipe}: a 7B model evaluates on 1-2 GPUs, not {per_step}"


def test_the_docs_table_is_the_7b_recipes(compiled):
    from pipelines.platform import steps_table

    cfg, c = compiled["qwen2.5-vl-7b-8gpu"]
    table = steps_table(cfg)
    assert table in (ROOT / "docs" / "cluster.md").read_text(), "docs/cluster.md: paste pipelines.platform.steps_table"
    for line in table.splitlines()[2:]:  # and the table says what the compiled YAML asks for
        step, _, _, gpus, cpu, memory = (f.strip() for f in line.strip("|").split("|"))
        res = c.container(step)["resources"]
        assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == (cpu, memory), step
        assert res.get("accelerator", {}).get("resourceCount", "0") == gpus, step


def test_grpo_sif_runs_in_the_vllm_environment_exactly_when_it_rolls_out_with_vllm(compiled):
    """The GPU image has two Python environments (images/Dockerfile.train: vLLM 0.31 caps transformers below
    what SFT needs): a pod's PATH picks one. grpo-sif training in its own pod with grpo.use_vllm starts with
    the vLLM environment first, then the image's own PATH (nvcc's folder included, for DeepSpeed); no other
    step, no step that only submits a TrainJob (its nodes get it: test_trainjob) and no recipe without vLLM
    rollouts overrides PATH."""
    from sifthinker.cluster.step_access import GPU_IMAGE_PATH

    seen = set()
    for recipe, (cfg, c) in compiled.items():
        for step in STAGES:
            path = c.pod_env(step, WITH_ENDPOINT)[0].get("PATH")
            if step == "grpo-sif" and cfg.grpo.use_vllm and not cfg.platform.uses_train_job:
                assert path == f"{cfg.platform.vllm_env}/bin:{GPU_IMAGE_PATH}", (recipe, path)
                assert "/usr/local/cuda/bin" in path.split(":")
                seen.add(recipe)
            else:
                assert path is None, (recipe, step, path)
    assert "qwen2.5-vl-3b-1gpu" in seen
