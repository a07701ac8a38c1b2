"""The compiled pipeline (KFP IR YAML): stages, order, the gate condition, and the platform settings.

kfp's local runner ignores the Kubernetes settings, so they are checked here on the compiled YAML for the
local recipe (none of them) and the 8-GPU recipe (GPUs, scheduling, /dev/shm, secrets, requests, PVC);
tests/pipelines/test_cluster_yaml.py reads every cluster recipe's YAML the way a cluster runs it.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pipelines` and `components` live at the repository root
    sys.path.insert(0, str(ROOT))

from pipelines.run import compile_pipeline  # noqa: E402
from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.config.schema import ConfigError  # noqa: E402
from sifthinker.names import STAGES  # noqa: E402

GPU_RECIPE = ROOT / "recipes" / "qwen2.5-vl-7b-8gpu.yaml"
LOCAL_RECIPE = ROOT / "recipes" / "local.yaml"
GPU_STEPS = ("sft", "grpo-sif", "evaluate")
CPU_STEPS = tuple(s for s in STAGES if s not in GPU_STEPS)
CHAIN = [("build-data", "validate-data"), ("validate-data", "sft"), ("sft", "grpo-sif"),
         ("grpo-sif", "evaluate"), ("evaluate", "gate"), ("gate", "register"), ("register", "deploy")]


class Compiled:
    def __init__(self, path: Path):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        self.spec = docs[0]
        self.platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
        self.root_tasks = self.spec["root"]["dag"]["tasks"]
        conds = [n for n, t in self.root_tasks.items() if t.get("triggerPolicy", {}).get("condition")]
        assert len(conds) == 1, conds
        self.cond_name = conds[0]
        self.cond = self.root_tasks[self.cond_name]
        self.cond_tasks = self.spec["components"][self.cond["componentRef"]["name"]]["dag"]["tasks"]
        loops = [n for n, t in self.root_tasks.items() if "parameterIterator" in t]
        assert len(loops) == 1, loops  # evaluate's ParallelFor over the recipe's benchmarks
        self.loop_name = loops[0]
        self.loop = self.root_tasks[self.loop_name]
        self.loop_tasks = self.spec["components"][self.loop["componentRef"]["name"]]["dag"]["tasks"]

    @property
    def stage_tasks(self) -> set[str]:
        return set(self.root_tasks) - {self.cond_name, self.loop_name} | set(self.cond_tasks) | set(self.loop_tasks)

    def task(self, name: str) -> dict:
        return self.root_tasks.get(name) or self.cond_tasks.get(name) or self.loop_tasks[name]

    def deps(self, name: str) -> set[str]:
        """Direct upstream stages; a task inside the condition or the loop also waits for its upstreams,
        and waiting for the loop means waiting for the tasks in it."""
        deps = set(self.task(name).get("dependentTasks", []))
        for group, tasks in ((self.cond, self.cond_tasks), (self.loop, self.loop_tasks)):
            if name in tasks:
                deps |= set(group.get("dependentTasks", []))
        if self.loop_name in deps:
            deps = deps - {self.loop_name} | set(self.loop_tasks)
        return deps

    def upstream(self, name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for d in self.deps(todo.pop()) - seen:
                seen.add(d)
                todo.append(d)
        return seen

    def executor(self, name: str) -> dict:
        return self.spec["deploymentSpec"]["executors"][self.task(name)["componentRef"]["name"].replace("comp-", "exec-", 1)]["container"]

    def k8s(self, name: str) -> dict:
        return self.platform.get(self.task(name)["componentRef"]["name"].replace("comp-", "exec-", 1), {})


@pytest.fixture(scope="module")
def local_cfg() -> RunConfig:
    return RunConfig.load(LOCAL_RECIPE)


@pytest.fixture(scope="module")
def gpu_cfg() -> RunConfig:
    return RunConfig.load(GPU_RECIPE)


@pytest.fixture(scope="module")
def local(local_cfg, tmp_path_factory) -> Compiled:
    return Compiled(compile_pipeline(local_cfg, tmp_path_factory.mktemp("c") / "local.yaml"))


@pytest.fixture(scope="module")
def gpu(gpu_cfg, tmp_path_factory) -> Compiled:
    return Compiled(compile_pipeline(gpu_cfg, tmp_path_factory.mktemp("c") / "gpu.yaml"))


@pytest.mark.parametrize("which", ["local", "gpu"])
def test_all_stages_in_order(which, request):
    c: Compiled = request.getfixturevalue(which)
    assert c.stage_tasks == set(STAGES)
    for up, down in CHAIN:
        assert up in c.upstream(down), f"{down} must run after {up}"
    for i, stage in enumerate(STAGES):  # no stage waits for a later one
        assert not c.upstream(stage) & set(STAGES[i:]), stage
    assert c.deps("build-data") == set()


@pytest.mark.parametrize("which", ["local", "gpu"])
def test_artifacts_flow_between_stages(which, request):
    c: Compiled = request.getfixturevalue(which)

    def art(task, name):
        return c.task(task)["inputs"]["artifacts"][name]["taskOutputArtifact"]

    assert art("validate-data", "train_data") == {"producerTask": "build-data", "outputArtifactKey": "train_data"}
    assert art("validate-data", "eval_data") == {"producerTask": "build-data", "outputArtifactKey": "eval_data"}
    assert art("sft", "train_data")["producerTask"] == "build-data"
    assert art("grpo-sif", "sft_model") == {"producerTask": "sft", "outputArtifactKey": "model"}
    # inside the loop, evaluate gets the loop's inputs, which come from grpo-sif and build-data
    assert c.task("evaluate")["inputs"]["artifacts"] == {
        "model": {"componentInputArtifact": "pipelinechannel--grpo-sif-model"},
        "eval_data": {"componentInputArtifact": "pipelinechannel--build-data-eval_data"}}
    assert c.loop["inputs"]["artifacts"]["pipelinechannel--grpo-sif-model"]["taskOutputArtifact"] == {
        "producerTask": "grpo-sif", "outputArtifactKey": "model"}
    assert c.loop["inputs"]["artifacts"]["pipelinechannel--build-data-eval_data"]["taskOutputArtifact"] == {
        "producerTask": "build-data", "outputArtifactKey": "eval_data"}
    gate_in = c.task("gate")["inputs"]["parameters"]["metrics_parts"]["taskOutputParameter"]
    assert gate_in == {"producerTask": c.loop_name, "outputParameterKey": "pipelinechannel--evaluate-Output"}
    # register records the gate's merged metrics (through the condition's inputs)
    assert c.task("register")["inputs"]["parameters"]["metrics_json"] == {
        "componentInputParameter": "pipelinechannel--gate-metrics"}
    assert c.cond["inputs"]["parameters"]["pipelinechannel--gate-metrics"]["taskOutputParameter"] == {
        "producerTask": "gate", "outputParameterKey": "metrics"}
    # one evaluate step per benchmark of the recipe, each told which one
    cfg = request.getfixturevalue(f"{which}_cfg")
    assert c.loop["parameterIterator"]["items"]["raw"] == json.dumps([b.name for b in cfg.eval.benchmarks])
    assert c.task("evaluate")["inputs"]["parameters"]["benchmark"] == {
        "componentInputParameter": c.loop["parameterIterator"]["itemInput"]}
    dep_in = c.task("deploy")["inputs"]["parameters"]["model_uri"]["taskOutputParameter"]
    assert dep_in == {"producerTask": "register", "outputParameterKey": "model_uri"}
    outs = c.spec["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"]
    assert outs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outs["report"]["artifactType"]["schemaTitle"] == "system.HTML"


@pytest.mark.parametrize("which", ["local", "gpu"])
def test_gate_condition_guards_register_and_deploy(which, request):
    c: Compiled = request.getfixturevalue(which)
    assert set(c.cond_tasks) == {"register", "deploy"}
    assert c.cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    src = c.cond["inputs"]["parameters"]["pipelinechannel--gate-Output"]["taskOutputParameter"]
    assert src == {"producerTask": "gate", "outputParameterKey": "Output"}
    gate_out = c.spec["components"]["comp-gate"]["outputDefinitions"]["parameters"]
    assert gate_out["Output"]["parameterType"] == "BOOLEAN"
    assert gate_out["failures"]["parameterType"] == "STRING"
    for side_effect in ("register", "deploy"):
        assert c.task(side_effect)["cachingOptions"].get("enableCache") is not True


@pytest.mark.parametrize("which", ["local", "gpu"])
def test_recipe_travels_as_parameter(which, request):
    c: Compiled = request.getfixturevalue(which)
    cfg = request.getfixturevalue(f"{which}_cfg")
    params = c.spec["root"]["inputDefinitions"]["parameters"]
    assert RunConfig.from_dict(yaml.safe_load(params["recipe"]["defaultValue"])) == cfg
    assert params["apply_deployment"]["defaultValue"] is False
    for stage in STAGES:
        assert c.task(stage)["inputs"]["parameters"]["recipe"] == {"componentInputParameter": "recipe"} or \
            c.task(stage)["inputs"]["parameters"]["recipe"]["componentInputParameter"].endswith("recipe")


def test_local_profile_has_no_cluster_settings(local, local_cfg):
    assert local.platform == {}
    for stage in STAGES:
        ex = local.executor(stage)
        assert "accelerator" not in ex.get("resources", {}), stage
        assert ex["image"] == local_cfg.platform.image


def test_gpu_steps_get_gpus_scheduling_and_shm(gpu, gpu_cfg):
    ev = gpu_cfg.eval.resources
    for stage in GPU_STEPS:
        ex, k8s = gpu.executor(stage), gpu.k8s(stage)
        acc = ex["resources"]["accelerator"]
        # evaluation is sized for one benchmark's generation (eval.resources), training for the node
        count, cpu, shm = ("1", 8.0, ev.shm_size) if stage == "evaluate" else ("8", 64.0, "64Gi")
        assert acc["resourceType"] == "nvidia.com/gpu" and acc["resourceCount"] == count, stage
        assert ex["image"] == gpu_cfg.platform.gpu_image
        assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert k8s["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory",
                                          "sizeLimit": shm}]
        assert ex["resources"]["cpuLimit"] == cpu
    assert gpu.loop["iteratorPolicy"] == {"parallelismLimit": gpu_cfg.eval.parallelism}


def test_evaluation_within_training_gpus_or_a_config_error(gpu_cfg, tmp_path):
    wide = dataclasses.replace(gpu_cfg.eval, parallelism=7,
                               resources=dataclasses.replace(gpu_cfg.eval.resources, gpus=2))  # 14 GPUs > 8
    with pytest.raises(ConfigError, match="more than training's 8"):
        compile_pipeline(dataclasses.replace(gpu_cfg, eval=wide), tmp_path / "wide.yaml")
    same = dataclasses.replace(gpu_cfg.eval, parallelism=1, resources=dataclasses.replace(gpu_cfg.eval.resources, gpus=None,
                                                                           cpu=None, memory=None, shm_size=None))
    c = Compiled(compile_pipeline(dataclasses.replace(gpu_cfg, eval=same), tmp_path / "same.yaml"))
    assert c.executor("evaluate")["resources"]["accelerator"]["resourceCount"] == "8"  # null: training's node
    assert c.executor("evaluate")["resources"]["resourceMemoryRequest"] == "640Gi"


def test_cpu_steps_get_none_of_the_gpu_settings(gpu, gpu_cfg):
    for stage in CPU_STEPS:
        ex, k8s = gpu.executor(stage), gpu.k8s(stage)
        assert "accelerator" not in ex.get("resources", {}), stage
        assert ex["image"] == gpu_cfg.platform.image, stage
        for key in ("nodeSelector", "tolerations", "emptyDirMounts"):
            assert key not in k8s, (stage, key)


def _secret_env(k8s: dict) -> dict[str, tuple[str, str]]:
    return {m["envVar"]: (s["secretName"], m["secretKey"]) for s in k8s.get("secretAsEnv", []) for m in s["keyToEnv"]}


def test_secrets_only_where_services_are_used(gpu):
    # the secrets whose templates are manifests/base/secrets/*.yaml (tests/manifests/test_manifests.py checks the keys);
    # tests/pipelines/test_cluster_yaml.py reads every cluster recipe's secrets the way a cluster does
    s3 = {"AWS_ACCESS_KEY_ID": ("sifthinker-s3", "AWS_ACCESS_KEY_ID"),
          "AWS_ENDPOINT_URL_S3": ("sifthinker-s3", "endpoint-url")}
    mlflow = {"MLFLOW_TRACKING_URI": ("sifthinker-mlflow", "tracking-uri")}
    hub = {"HF_TOKEN": ("sifthinker-hf", "token")}
    expected = {"build-data": s3, "validate-data": {}, "sft": {**mlflow, **hub}, "grpo-sif": {**mlflow, **hub},
                "evaluate": {**s3, **mlflow, **hub}, "gate": mlflow, "register": mlflow, "deploy": mlflow}
    for stage, want in expected.items():
        env = _secret_env(gpu.k8s(stage))
        assert want.items() <= env.items(), stage
        assert {v[0] for v in env.values()} == {v[0] for v in want.values()}, stage  # no other secret


def test_every_step_has_cpu_and_memory_requests(gpu, gpu_cfg):
    for stage in STAGES:
        res = gpu.executor(stage)["resources"]
        assert res["resourceCpuRequest"] == res["resourceCpuLimit"] and res["resourceMemoryRequest"], stage
    assert gpu.executor("build-data")["resources"]["resourceCpuRequest"] == str(gpu_cfg.data.workers)  # 16 workers


def test_workspace_pvc_and_env_on_every_step(gpu):
    for stage in STAGES:
        assert gpu.k8s(stage)["pvcMount"][0]["mountPath"] == "/workspace", stage
        env = {e["name"]: e["value"] for e in gpu.executor(stage)["env"]}
        assert env["SIFTHINKER_WORK_DIR"] == "/workspace" and env["HF_HOME"] == "/workspace/hf", stage


def test_gpu_recipe_has_the_paper_hyperparameters(gpu_cfg):
    c = gpu_cfg
    assert c.model.base == "Qwen/Qwen2.5-VL-7B-Instruct" and c.model.max_pixels == 512 * 512
    assert (c.sft.lora.r, c.sft.lora.alpha, c.sft.learning_rate, c.sft.epochs) == (8, 16, 1e-4, 3)
    assert (c.sft.lr_scheduler, c.sft.warmup_ratio, c.sft.max_length) == ("cosine", 0.1, 2048)
    assert c.sft.per_device_batch_size * c.sft.gradient_accumulation_steps * c.platform.gpu.count == 16
    g = c.grpo
    assert (g.num_generations, g.temperature, g.max_completion_length, g.beta, g.learning_rate) == (8, 1.0, 2048, 0.04, 1e-5)
    assert (g.lora.r, g.lora.alpha, g.lora.dropout) == (64, 128, 0.05)
    assert g.per_device_batch_size * c.platform.gpu.count % g.num_generations == 0
    assert c.sft.deepspeed and c.sft.deepspeed.endswith("zero3.json")
    assert (ROOT / "images" / "deepspeed" / "zero3.json").is_file()


def test_unknown_gpu_step_is_a_config_error(gpu_cfg, tmp_path):
    bad = dataclasses.replace(gpu_cfg, platform=dataclasses.replace(gpu_cfg.platform, gpu_steps=["sft", "grpo"]))
    with pytest.raises(ConfigError, match="gpu_steps"):
        compile_pipeline(bad, tmp_path / "bad.yaml")


def test_underscore_step_names_and_no_gpus(gpu_cfg, tmp_path):
    plat = dataclasses.replace(gpu_cfg.platform, gpu_steps=["grpo_sif"])
    c = Compiled(compile_pipeline(dataclasses.replace(gpu_cfg, platform=plat), tmp_path / "a.yaml"))
    assert "accelerator" in c.executor("grpo-sif")["resources"]
    assert "accelerator" not in c.executor("sft").get("resources", {})
    plat0 = dataclasses.replace(plat, gpu=dataclasses.replace(plat.gpu, count=0))
    c0 = Compiled(compile_pipeline(dataclasses.replace(gpu_cfg, platform=plat0), tmp_path / "b.yaml"))
    assert all("accelerator" not in c0.executor(s).get("resources", {}) for s in STAGES)
    assert all("nodeSelector" not in c0.k8s(s) for s in STAGES)


def test_cli_compile(tmp_path):
    from sifthinker.cli import main

    out = tmp_path / "p.yaml"
    res = CliRunner().invoke(main, ["pipeline", "compile", "--recipe", str(LOCAL_RECIPE), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "compiled pipeline for recipe local" in res.output
    assert Compiled(out).cond_tasks.keys() == {"register", "deploy"}


# ---- retries, caching, parameters, TrainJob profiles ------------------------------------------------------
def test_every_step_has_its_retry_and_caching_policy(gpu):
    from pipelines.platform import STEP_POLICY

    assert set(STEP_POLICY) == set(STAGES)
    for stage in STAGES:
        retries, cache = STEP_POLICY[stage]
        task = gpu.task(stage)
        assert task["cachingOptions"].get("enableCache", False) is cache, stage
        if retries:
            assert task["retryPolicy"] == {"maxRetryCount": retries, "backoffDuration": "60s",
                                           "backoffFactor": 2.0, "backoffMaxDuration": "3600s"}, stage
        else:
            assert "retryPolicy" not in task, stage
    assert STEP_POLICY["validate-data"][0] == 0  # bad data is a verdict, not a flake
    for side_effect in ("gate", "register", "deploy"):  # the registry's state, or side effects: never cached
        assert STEP_POLICY[side_effect][1] is False


def test_local_runs_are_not_retried(local_cfg, tmp_path):
    from kfp import compiler

    from pipelines.sifthinker_pipeline import build_pipeline

    out = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(local_cfg, retries=False), str(out))
    c = Compiled(out)
    assert all("retryPolicy" not in c.task(s) for s in STAGES)
    assert c.task("register")["cachingOptions"].get("enableCache", False) is False


def test_parameters_are_typed_and_described(gpu):
    params = gpu.spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in params.items()} == {"recipe": "STRING", "apply_deployment": "BOOLEAN"}
    assert all(len(v.get("description", "")) > 20 for v in params.values())


def test_a_trainjob_profile_waits_on_the_cpu_and_trains_on_the_nodes(gpu_cfg, tmp_path):
    cfg = RunConfig.load(ROOT / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml")
    assert cfg.platform.nodes == 2 and cfg.platform.uses_train_job
    c = Compiled(compile_pipeline(cfg, tmp_path / "2x8.yaml"))
    for stage in ("sft", "grpo-sif"):  # submits a TrainJob and waits: no GPU held, the CPU image
        assert "accelerator" not in c.executor(stage).get("resources", {}), stage
        assert c.executor(stage)["image"] == cfg.platform.image and "nodeSelector" not in c.k8s(stage)
        assert c.k8s(stage)["pvcMount"][0]["pvcNameParameter"]["runtimeValue"]["constant"] == "sifthinker-workspace"
    assert c.executor("evaluate")["resources"]["accelerator"]["resourceCount"] == "1"  # eval.resources.gpus
    tj = dataclasses.replace(gpu_cfg.platform.train_job, enabled=True)  # the recipe switch, on one node
    switched = dataclasses.replace(gpu_cfg, platform=dataclasses.replace(gpu_cfg.platform, train_job=tj))
    c1 = Compiled(compile_pipeline(switched, tmp_path / "switch.yaml"))
    assert "accelerator" not in c1.executor("grpo-sif").get("resources", {})
    assert c1.executor("evaluate")["resources"]["accelerator"]["resourceCount"] == "1"


@pytest.mark.parametrize("recipe", ["qwen2.5-vl-3b-1gpu.yaml", "qwen2.5-vl-7b-2x8gpu.yaml"])
def test_the_gpu_recipes_compile_with_their_sizes(recipe, tmp_path):
    cfg = RunConfig.load(ROOT / "recipes" / recipe)
    c = Compiled(compile_pipeline(cfg, tmp_path / "p.yaml"))
    gpus = str(cfg.eval.resources.gpus or cfg.platform.gpu.count)
    assert c.executor("evaluate")["resources"]["accelerator"]["resourceCount"] == gpus
    world = cfg.platform.gpu.count * cfg.platform.nodes
    assert cfg.grpo.per_device_batch_size * world % cfg.grpo.num_generations == 0  # whole groups per step
    assert cfg.sft.per_device_batch_size * cfg.sft.gradient_accumulation_steps * world == 16  # the paper's batch
    assert cfg.grpo.use_vllm and cfg.platform.service_account == "sifthinker-pipeline"


def test_stage_config_reads_json_or_yaml_and_sets_the_run_id(local_cfg, monkeypatch):
    import os

    from sifthinker.runtime.stages import recipe_parameter, stage_config

    monkeypatch.setenv("SIFTHINKER_PIPELINE_RUN", "")
    assert "\n" not in recipe_parameter(local_cfg)
    assert stage_config(recipe_parameter(local_cfg), "{{$.pipeline_job_uuid}}") == local_cfg
    assert os.environ["SIFTHINKER_PIPELINE_RUN"] == ""  # an unresolved placeholder is not an id
    assert stage_config(local_cfg.to_yaml(), "job-1") == local_cfg
    assert os.environ["SIFTHINKER_PIPELINE_RUN"] == "job-1"
    assert stage_config(local_cfg.to_yaml(), "job-2") and os.environ["SIFTHINKER_PIPELINE_RUN"] == "job-1"
    with pytest.raises(ConfigError, match="unknown key"):
        stage_config("name: x\nnot_a_key: 1\n")


def test_local_run_summary_from_task_folders(tmp_path):
    """run_local's summariser on task folders laid out as kfp's local runner leaves them."""
    import json

    from pipelines.run import _collect

    run = tmp_path / "sifthinker-local-2026"
    for task, out in {
        "evaluate": {"parameterValues": {"Output": json.dumps({"accuracy": 0.5})},
                     "artifacts": {"metrics": {"artifacts": [{"name": "metrics", "uri": str(run / "evaluate/metrics"),
                                                              "metadata": {"accuracy": 0.5}}]}}},
        "gate": {"parameterValues": {"Output": False}},
    }.items():
        (run / task).mkdir(parents=True)
        (run / task / "executor_output.json").write_text(json.dumps(out))
    (run / "evaluate" / "report").write_text("<html></html>")
    (run / "gate" / "failures").write_text("accuracy 0.50 < 1.01\nmetric 'x' missing from evaluation")
    res = _collect("p-1", tmp_path, run)
    assert res.ran == ["evaluate", "gate"] and res.gate_passed is False
    assert res.gate_failures == ["accuracy 0.50 < 1.01", "metric 'x' missing from evaluation"]
    assert res.metrics == {"accuracy": 0.5} and res.registered is None
    assert res.artifact("evaluate", "report") == run / "evaluate" / "report"
    assert res.tasks["evaluate"].artifacts["metrics"]["metadata"] == {"accuracy": 0.5}
    assert "gate: FAILED" in res.summary() and "not run: build-data" in res.summary()
    assert json.loads(json.dumps(res.to_dict()))["gate_failures"][0].startswith("accuracy")
