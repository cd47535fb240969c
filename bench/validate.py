"""Every check of a command's input, in one place, made before any work starts.

The rules themselves live beside what they guard (a depth is 6n+2 in models.py, a torch.compile
mode in speed.py, a W&B mode in tracking.py, the batch split in data.py); this module applies them
all, so each entry point validates once, up front, and exits with an error that names the problem.
"""
from __future__ import annotations

from typing import Iterable

from bench import models, speed, tracking
from bench.config import Params
from bench.record import Cell


def run(params: Params, cells: Iterable[Cell] = (), check_speed: bool = False, check_wandb: bool = False) -> None:
    """The cells, and the `speed` section and the W&B mode where the command reads them (a command checks
    only the params it reads, so that dvc.yaml can declare exactly those); raise ValueError naming the first bad one."""
    for cell in dict.fromkeys((c.variant, c.depth) for c in cells):
        models.check(*cell, params.model.shortcut)
    if check_speed:
        speed.check(params.speed)
    if check_wandb:
        tracking.mode(params)


def batch(params: Params, train_images: int, world_size: int) -> int:
    """train.batch_size against the training images and the processes; returns the batch per process."""
    b = params.train.batch_size
    if b > train_images:
        raise ValueError(f"train.batch_size={b} exceeds the {train_images} training images")
    from bench.data import local_batch_size  # data imports Lightning: only the commands that train get here

    return local_batch_size(b, world_size)
