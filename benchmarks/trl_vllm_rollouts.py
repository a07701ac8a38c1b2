"""Does TRL's GRPO run with vLLM rollouts (``use_vllm``) on the CPU? Two GRPO steps of TRL 1.16 on the tiny
Qwen2.5-VL, with vLLM from the ``make vllm-env`` venv (vllm-cpu 0.32.0). The result is recorded in
docs/benchmarks.md ("TRL's vLLM rollouts"); this script is how it was obtained.

It runs in the vLLM venv, not the project's (vLLM pins torch 2.13.0, the project 2.14.1), with TRL and its
pure-Python dependencies added beside it, untouched::

    VENV=work/vllm-env; OVERLAY=work/trl-overlay
    $VENV/bin/pip install --target $OVERLAY --no-deps -c constraints.txt trl accelerate datasets \\
        multiprocess pandas pyarrow xxhash pytz python-dateutil tzdata six
    export PYTHONPATH=$OVERLAY VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1
    $VENV/bin/python benchmarks/trl_vllm_rollouts.py MODEL colocate OUT
    # server mode: vLLM's server as `trl vllm-serve` would start it (that command itself fails with vllm-cpu:
    # it looks up a distribution named "vllm"), then the trainer
    VLLM_SERVER_DEV_MODE=1 $VENV/bin/python -m vllm.entrypoints.openai.api_server --model MODEL \\
        --host 127.0.0.1 --port 18901 --dtype float32 --max-model-len 4096 --enable-scale-out \\
        --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1 &
    $VENV/bin/python benchmarks/trl_vllm_rollouts.py MODEL server OUT http://127.0.0.1:18901

MODEL: a ``save_pretrained`` folder of the tiny model (e.g. ``benchmarks/serve.py``'s ``tiny_model``).
"""

from __future__ import annotations

import sys

import numpy as np
from datasets import Dataset, DatasetInfo
from datasets.features import Features, Value
from datasets.features import Image as ImageFeature
from datasets.table import InMemoryTable
from PIL import Image
from trl import GRPOConfig, GRPOTrainer


def dataset(n: int = 4) -> Dataset:
    rng = np.random.default_rng(0)
    data = {"prompt": [[{"role": "user", "content": [
                {"type": "image", "text": None},
                {"type": "text", "text": "Which is closer, the red cube or the blue sphere?"}]}]] * n,
            "image": [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(n)]}
    feats = Features({"prompt": [{"role": Value("string"), "content": [{"type": Value("string"),
                                                                          "text": Value("string")}]}],
                      "image": ImageFeature()})
    # Dataset.from_dict fingerprints the table with dill, which fails in the vLLM venv ("PicklingError: Can't
    # pickle <class 'MonthDayNano'>"): a fixed fingerprint instead
    table = InMemoryTable.from_pydict(feats.encode_batch(data), schema=feats.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=feats), fingerprint="trl-vllm")


def reward(completions: list, **_: object) -> list[float]:
    return [float(len(c[0]["content"]) % 3) for c in completions]


def main() -> None:
    model, mode, out = sys.argv[1:4]
    server = sys.argv[4] if len(sys.argv) > 4 else None
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=4, num_generations=4, max_completion_length=16,
                      max_steps=2, use_vllm=True, vllm_mode=mode, vllm_server_base_url=server,
                      vllm_server_timeout=900, vllm_gpu_memory_utilization=0.3, vllm_max_model_length=1024,
                      report_to="none", use_cpu=True, bf16=False, logging_steps=1, save_strategy="no")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset())
    if mode == "colocate":  # name the parameter vLLM cannot take back (the failure recorded in the docs)
        vllm_model = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
        load = vllm_model.load_weights

        def load_weights(weights):  # noqa: ANN001, ANN202 - vLLM's signature
            weights = list(weights)
            try:
                return load(weights)
            except Exception as e:
                print("vLLM load_weights failed for", [n for n, _ in weights], f"{type(e).__name__}: {e}", flush=True)
                raise

        vllm_model.load_weights = load_weights
    trainer.train()
    print("log history:", [{k: v for k, v in h.items() if k in ("step", "reward", "loss")}
                           for h in trainer.state.log_history])


if __name__ == "__main__":
    main()
