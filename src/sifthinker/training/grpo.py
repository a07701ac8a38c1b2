"""GRPO-SIF (spec section 3) with TRL's GRPOTrainer: rollouts on both images, the four SIF rewards.

R = w_format r_format + w_answer r_answer + w_box r_box + w_depth r_depth, weights from the recipe
(`grpo.reward_weights`, TRL's `reward_weights`). The answer reward's progress term goes through a
:class:`~sifthinker.rewards.progress.ProgressExchange`: whole-group means gathered across ranks, kept by rank 0
in the SQLite store at `grpo.progress_store`, copied into every checkpoint (spec defect P2). Free-form
answers go to the recipe's judge (`grpo.judge`). `parity: original` builds the original's rewards and
store rules and (through `grpo.prompt_images: rgb`) its RGB-only prompt.

Advantage = (R - group mean) / (group std + 1e-4) (TRL's `scale_rewards="group"`), KL to the starting
model with beta from the recipe (TRL's k3 estimator), and the per-sequence "grpo" loss of the paper's
code base. `grpo.lora` switches to LoRA (the paper: r=64, alpha=128, dropout 0.05), merged at the end.
Per step MLflow gets each reward's mean and std, KL, completion lengths, the fraction of groups whose
rewards have zero variance (`frac_reward_zero_std`), judge counts; every `grpo.sample_steps` steps a table
of sample completions with their rendered traces. Rollouts: vLLM in TRL's colocate mode where the recipe
asks for it (`grpo.use_vllm`) and vllm and a GPU are present, plain ``generate`` otherwise (:func:`rollout_args`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import REWARDS, Stage
from sifthinker.training.checkpoints import CheckpointPlan, run_key
from sifthinker.training.common import TrainResult, device_flags, load_model_checkpoint, peft_config
from sifthinker.training.datasets import grpo_dataset
from sifthinker.training.deepspeed_config import deepspeed_config
from sifthinker.training.preflight import preflight
from sifthinker.training.ranks import is_main_process
from sifthinker.training.runner import TrainingStage, run_stage
from sifthinker.training.samples import SampleTableCallback, with_sample_columns

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.sqlite"  # the progress store's copy inside a checkpoint


def reward_setup(cfg: RunConfig, store: Any = None, judge: Any = None,
                 exchange: Any = None) -> tuple[list[Any], list[float]]:
    """The reward functions (in REWARDS) and their weights; unknown names in the recipe are errors.

    A component missing from `grpo.reward_weights` gets weight 0 and is not computed. `parity: original`
    builds the original code's rewards.
    """
    from sifthinker.rewards.reward_funcs import get_reward_funcs

    weights = dict(cfg.grpo.reward_weights)
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"grpo.reward_weights: unknown reward(s) {unknown}; expected {list(REWARDS)}")
    names = [n for n in REWARDS if float(weights.get(n, 0.0)) != 0.0]
    if not names:
        raise ValueError("grpo.reward_weights: every weight is 0, there is nothing to optimise")
    funcs = get_reward_funcs(names, store=store, judge=judge, original=cfg.original, exchange=exchange)
    return funcs, [float(weights[n]) for n in names]


def progress_exchange(cfg: RunConfig) -> Any:
    """The answer reward's progress bookkeeping: the SQLite store on rank 0, nothing on the others."""
    from sifthinker.rewards.progress import ProgressExchange, SQLiteProgressStore

    store = SQLiteProgressStore(cfg.path(cfg.grpo.progress_store)) if is_main_process() else None
    return ProgressExchange(store, original=cfg.original)


def trainer_class() -> type:
    """TRL's GRPOTrainer, resumable: the prompt order depends only on (seed, epoch), and full-model
    checkpoints load (:func:`~sifthinker.training.common.load_model_checkpoint`).

    TRL's sampler draws each epoch's permutation from one generator that runs on across epochs, which a
    process resumed from a checkpoint cannot reproduce; reseeding per epoch (transformers calls
    ``set_epoch`` before every epoch, resumed or not) makes a resumed run see the same prompts.
    """
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class EpochSeededSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed((self.seed or 0) + epoch)

    class SIFGRPOTrainer(GRPOTrainer):
        def _get_train_sampler(self, dataset: Any = None) -> Any:
            sampler = super()._get_train_sampler(dataset)
            if isinstance(sampler, RepeatSampler):
                sampler.__class__ = EpochSeededSampler  # same state, one more method
            return sampler

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            target = model if model is not None else self.model
            if hasattr(target, "peft_config") or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_model_checkpoint(target, resume_from_checkpoint)  # transformers' own loads no weight here
            return None

    return SIFGRPOTrainer


def rollout_args(use_vllm: bool, vllm_available: bool | None = None, gpu: bool | None = None) -> dict[str, Any]:
    """TRL's rollout settings: vLLM in colocate mode (in the training processes, sharing their GPUs, no
    separate server) when the recipe asks for it, vllm is importable and a GPU is present; plain
    ``generate`` otherwise, with a warning when vLLM was asked for (a CPU run of a GPU recipe still works).
    """
    if not use_vllm:
        return {"use_vllm": False}
    if vllm_available is None:
        import importlib.util

        vllm_available = importlib.util.find_spec("vllm") is not None
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    if vllm_available and gpu:
        return {"use_vllm": True, "vllm_mode": "colocate"}
    log.warning("grpo.use_vllm: %s; rollouts use plain generate",
                "vllm is not installed" if not vllm_available else "no GPU")
    return {"use_vllm": False}


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
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "seed": cfg.data.seed,
        "deepspeed": deepspeed_config(g.deepspeed) if g.deepspeed else None,
        **device_flags(),
        **rollout_args(g.use_vllm),
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

    def deepspeed(self, cfg: RunConfig) -> str | None:
        return cfg.grpo.deepspeed

    def dataset(self, cfg: RunConfig, records: list[dict], root: Path) -> Any:
        return grpo_dataset(records, root, cfg.grpo.prompt_images)

    def params(self, cfg: RunConfig, model: Any, records: list[dict]) -> dict[str, Any]:
        # which rollout engine actually ran: use_vllm may fall back to generate (rollout_args says why)
        rollouts = "vllm" if rollout_args(cfg.grpo.use_vllm)["use_vllm"] else "generate"
        return {**{f"grpo.{k}": v for k, v in asdict(cfg.grpo).items()}, "loss_type": "grpo", "parity": cfg.parity,
                "rollouts": rollouts}

    def checkpoint_plan(self, cfg: RunConfig, run: dict[str, Any]) -> CheckpointPlan | None:
        g = cfg.grpo  # save_steps 0: a checkpoint only when preempted (sifthinker.training.preemption)
        key = run_key(self.name, {**run, "grpo": g, "model": cfg.model, "parity": cfg.parity, "seed": cfg.data.seed})
        return CheckpointPlan.for_run(g.checkpoint_dir, cfg.work_path, key, g.save_steps, g.save_total_limit,
                                      {PROGRESS_FILE: cfg.path(g.progress_store)})

    def trainer(self, cfg, model, processor, dataset, work_dir, callbacks, overrides):
        from sifthinker.rewards.judge import judge_from_config

        funcs, weights = reward_setup(cfg, judge=judge_from_config(cfg.grpo.judge), exchange=progress_exchange(cfg))
        funcs[0] = with_sample_columns(funcs[0])  # one function hands TRL the sample tables' columns
        samples = SampleTableCallback(cfg.grpo.sample_steps, cfg.grpo.num_samples)
        trainer = trainer_class()(model=model, reward_funcs=funcs, args=grpo_args(cfg, work_dir, weights, **overrides),
                                  train_dataset=dataset, processing_class=processor,
                                  peft_config=peft_config(cfg.grpo.lora), callbacks=[*callbacks, samples])
        samples.trainer = trainer
        keys = ["loss", "reward", "kl", "completions/mean_length", *[f"rewards/{f.__name__}/mean" for f in funcs]]
        return trainer, keys

    def extra_metrics(self, history: list[dict[str, float]]) -> dict[str, float]:
        return half_means(history, "reward")


GRPO = GRPOStage()


def run_grpo(cfg: RunConfig, train_dir: Path, model_dir: Path | str, out_dir: Path,
             max_steps: int | None = None) -> TrainResult:
    """GRPO-SIF from `model_dir` (normally the SFT output) on `train_dir`'s records; save to `out_dir`.

    Checks the recipe, the data and the model first and stops before loading anything when one is
    unusable (:func:`sifthinker.training.preflight.preflight`). Logs params, per-step metrics and the
    saved model (artifacts under `model/`) to the MLflow run of stage "grpo-sif"; see
    :func:`sifthinker.training.runner.run_stage`.
    """
    preflight(GRPO.name, cfg, train_dir, model_dir)
    return run_stage(GRPO, cfg, train_dir, model_dir, out_dir, max_steps=max_steps)
