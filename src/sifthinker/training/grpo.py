"""GRPO-SIF (spec section 3) with TRL's GRPOTrainer: rollouts on both images, the four SIF rewards.

R = w_format r_format + w_answer r_answer + w_box r_box + w_depth r_depth, weights from the recipe
(`grpo.reward_weights`, TRL's `reward_weights`). The answer reward's progress term reads and writes the
SQLite store at `grpo.progress_store` (it survives restarts and is shared across ranks; spec defect P2).
Advantage = (R - group mean) / (group std + 1e-4) (TRL's `scale_rewards="group"`), KL to the starting
model with beta from the recipe (TRL's k3 estimator), and the per-sequence "grpo" loss of the paper's
code base. `grpo.lora` switches to LoRA (the paper: r=64, alpha=128, dropout 0.05), merged at the end.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sifthinker.config import RunConfig
from sifthinker.names import REWARDS, Stage
from sifthinker.training.common import TrainResult, device_flags, peft_config
from sifthinker.training.datasets import grpo_dataset
from sifthinker.training.runner import TrainingStage, run_stage


def reward_setup(cfg: RunConfig, store: Any = None) -> tuple[list[Any], list[float]]:
    """The reward functions (in REWARDS) and their weights; unknown names in the recipe are errors.

    A component missing from `grpo.reward_weights` gets weight 0 and is not computed.
    """
    from sifthinker.rewards import get_reward_funcs

    weights = dict(cfg.grpo.reward_weights)
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"grpo.reward_weights: unknown reward(s) {unknown}; expected {list(REWARDS)}")
    names = [n for n in REWARDS if float(weights.get(n, 0.0)) != 0.0]
    if not names:
        raise ValueError("grpo.reward_weights: every weight is 0, there is nothing to optimise")
    return get_reward_funcs(names, store=store), [float(weights[n]) for n in names]


def grpo_args(cfg: RunConfig, output_dir: str, reward_weights: list[float], **overrides: Any) -> Any:
    """TRL GRPOConfig from the recipe (device flags decided here, not in the recipe)."""
    from trl import GRPOConfig

    g = cfg.grpo
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "learning_rate": g.learning_rate,
        "per_device_train_batch_size": g.per_device_batch_size,
        "gradient_accumulation_steps": g.gradient_accumulation_steps,
        "num_generations": g.num_generations,
        "max_completion_length": g.max_completion_length,
        "temperature": g.temperature,
        "beta": g.beta,
        "num_train_epochs": g.epochs,
        "max_steps": g.max_steps,
        "reward_weights": reward_weights,
        "scale_rewards": "group",  # (R - mean) / (std + 1e-4) within each prompt's group
        "loss_type": "grpo",  # per-sequence mean, as in the R1-V code the paper builds on
        "logging_steps": g.logging_steps,
        "logging_first_step": True,
        "save_strategy": "no",
        "report_to": [],  # MetricsCallback logs into the stage's MLflow run
        "use_vllm": g.use_vllm,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "seed": cfg.data.seed,
        "deepspeed": g.deepspeed,
        **device_flags(),
    }
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def select_items(records: list[dict], num_items: int) -> list[dict]:
    """The first `num_items` records (all when num_items <= 0): the builder interleaves categories."""
    return records if num_items <= 0 else records[:num_items]


def half_means(history: list[dict[str, float]], key: str) -> dict[str, float]:
    """Mean of `key` over the first and the second half of the logged steps.

    One step's reward is dominated by which prompts it drew; over two epochs of the same items the two
    halves see the same prompts, so their difference shows what the policy learned.
    """
    values = [row[key] for row in history if key in row]
    if len(values) < 2:
        return {}
    mid = len(values) // 2
    return {f"{key}_first_half": sum(values[:mid]) / mid,
            f"{key}_second_half": sum(values[mid:]) / (len(values) - mid)}


class GRPOStage(TrainingStage):
    name = Stage.GRPO_SIF

    def select(self, cfg: RunConfig, records: list[dict]) -> list[dict]:
        return select_items(records, cfg.grpo.num_items)

    def dataset(self, records: list[dict], root: Path) -> Any:
        return grpo_dataset(records, root)

    def params(self, cfg: RunConfig, model: Any, records: list[dict]) -> dict[str, Any]:
        return {**{f"grpo.{k}": v for k, v in asdict(cfg.grpo).items()}, "loss_type": "grpo"}

    def trainer(self, cfg, model, processor, dataset, work_dir, callbacks, overrides):
        from trl import GRPOTrainer

        from sifthinker.progress import SQLiteProgressStore

        store_path = cfg.path(cfg.grpo.progress_store)
        store_path.parent.mkdir(parents=True, exist_ok=True)
        funcs, weights = reward_setup(cfg, SQLiteProgressStore(store_path))
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=grpo_args(cfg, work_dir, weights, **overrides),
                              train_dataset=dataset, processing_class=processor,
                              peft_config=peft_config(cfg.grpo.lora), callbacks=callbacks)
        keys = ["loss", "reward", "kl", "completions/mean_length", *[f"rewards/{f.__name__}/mean" for f in funcs]]
        return trainer, keys

    def extra_metrics(self, history: list[dict[str, float]]) -> dict[str, float]:
        return half_means(history, "reward")


GRPO = GRPOStage()


def run_grpo(cfg: RunConfig, train_dir: Path, model_dir: Path | str, out_dir: Path,
             max_steps: int | None = None) -> TrainResult:
    """GRPO-SIF from `model_dir` (normally the SFT output) on `train_dir`'s records; save to `out_dir`.

    Logs params, per-step metrics (loss, reward and each reward's mean, KL, completion lengths) and the
    saved model (artifacts under `model/`) to the MLflow run of stage "grpo-sif"; see
    :func:`sifthinker.training.runner.run_stage`.
    """
    return run_stage(GRPO, cfg, train_dir, model_dir, out_dir, max_steps=max_steps)
