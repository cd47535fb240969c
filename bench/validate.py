"""Every check of a command's input, in one place, made before any work starts.

A cell's rule (a depth is 6n+2) lives in record.py and a W&B mode's in tracking.py; the torch.compile modes and
the one division of the global batch across processes live here. This module applies them all, so each entry
point validates once, up front, and exits with an error that names the problem. It imports no torch, so that
every command can check its input before the heavy imports.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench import tracking
from bench.config import Params, Speed
from bench.record import Cell, check

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def run(params: Params, cells: Iterable[Cell] = (), check_speed: bool = False, check_wandb: bool = False) -> None:
    """The cells, and the `speed` section and the W&B mode where the command reads them (a command checks
    only the params it reads, so that dvc.yaml can declare exactly those); raise ValueError naming the first bad one."""
    for cell in dict.fromkeys((c.variant, c.depth) for c in cells):
        check(*cell, params.model.shortcut)
    if check_speed:
        compile_mode(params.speed)
    if check_wandb:
        tracking.mode(params)


def compile_mode(cfg: Speed) -> None:
    """Raise ValueError naming a bad `speed` param, before any work."""
    if cfg.compile is not None and cfg.compile not in COMPILE_MODES:
        raise ValueError(
            f"speed.compile={cfg.compile!r} is not a torch.compile mode; "
            f"use one of: {', '.join(COMPILE_MODES)}, or null for eager"
        )


def batch(params: Params, train_images: int, world_size: int) -> int:
    """train.batch_size against the training images and the processes; returns the batch per process."""
    b = params.train.batch_size
    if b > train_images:
        raise ValueError(f"train.batch_size={b} exceeds the {train_images} training images")
    return local_batch_size(b, world_size)


def local_batch_size(global_batch: int, world_size: int) -> int:
    """The one place the global batch is divided across ranks."""
    if global_batch % world_size:
        raise ValueError(f"train.batch_size={global_batch} does not divide across {world_size} processes")
    return global_batch // world_size
