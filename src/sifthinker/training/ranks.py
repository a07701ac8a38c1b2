"""Where this process stands in a distributed launch (torchrun's environment), and how many to start.

A leaf module: the training stages, the launcher and the helpers all ask it, and it asks nobody.
"""

from __future__ import annotations

import os

from sifthinker.names import Env


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def in_distributed_launch() -> bool:
    return "LOCAL_RANK" in os.environ or world_size() > 1


def processes_to_launch() -> int:
    """How many processes a stage should launch (0 = run here, in this process).

    ``SIFTHINKER_NPROC`` overrides the count (1 stays single-process; 2 exercises the launcher on a CPU).
    """
    if in_distributed_launch():
        return 0
    if want := os.environ.get(Env.NPROC):
        n = int(want)
    else:
        import torch

        # TRL's GRPOTrainer refuses nn.DataParallel, which one process with several GPUs would use.
        n = torch.cuda.device_count()
    return n if n > 1 else 0
