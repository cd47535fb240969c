"""Every check of a command's input, in one place, made before any work starts.

A cell's rule (a depth is 6n+2) lives in record.py and a W&B mode's in tracking.py; the torch.compile modes and
the one division of the global batch across processes live here. This module applies them all, so each entry
point validates once, up front, and exits with an error that names the problem. It imports no torch, so that
every command can check its input before the heavy imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from bench import tracking
from bench.config import Params
from bench.params_file import shown
from bench.record import Cell, check
from bench.schema import SEED_END, Speed, Trainer

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
# Lightning's flags that bench runs; where this machine lacks the device, Lightning's own check says so.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # tpu/xla: no torch_xla here
STRATEGIES = ("auto", "ddp", "ddp_spawn")  # ddp_fork/ddp_notebook hang outside notebooks; dp, fsdp: not tested
# The "-true" halves and 64-true cast the weights but not the float32 images: conv2d refuses the mix.
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16")
CLUSTER = ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID")  # a scheduler that starts every node's processes


def run(
    params: Params,
    cells: Iterable[Cell] = (),
    check_speed: bool = False,
    check_wandb: bool = False,
    check_nodes: bool = False,
) -> None:
    """The cells, the `speed` and `trainer` sections, the W&B mode and trainer.num_nodes where the command reads
    them (a command checks only the params it reads, so that dvc.yaml can declare exactly those; num_nodes only
    where it trains on this machine); raise ValueError naming the first bad one."""
    for cell in cells:
        if not 0 <= cell.seed < SEED_END:
            raise ValueError(f"seed {cell.seed} must be at least 0 and below {SEED_END} (numpy's seeds)")
    for cell in dict.fromkeys((c.variant, c.depth) for c in cells):
        check(*cell, params.model.shortcut)
    if check_speed:
        compile_mode(params.speed)
        trainer(params.trainer)
    if check_nodes:
        nodes(params.trainer)
    if check_wandb:
        tracking.mode(params)


def trainer(cfg: Trainer) -> None:
    """Raise ValueError naming a `trainer` flag that bench cannot run, before Lightning is imported."""
    for key, value, accepted in (
        ("accelerator", cfg.accelerator, ACCELERATORS),
        ("strategy", cfg.strategy, STRATEGIES),
        ("precision", cfg.precision, PRECISIONS),
    ):
        if value not in accepted:
            what = {
                "accelerator": "not an accelerator bench runs",
                "strategy": "an invalid strategy name for bench",
                "precision": f"Precision {shown(value)} is invalid for bench's models",
            }[key]
            raise ValueError(f"trainer.{key}={shown(value)}: {what}; use one of: {', '.join(accepted)}")
    d = cfg.devices  # a count (-1: all), a list of ids, or a string Lightning reads ("auto", "0,1")
    if (
        isinstance(d, bool)
        or (isinstance(d, int) and d < 1 and d != -1)
        or d == []
        or (isinstance(d, list) and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in d))
    ):
        raise ValueError(
            f"trainer.devices={shown(d)} must be a count of at least 1 (-1: all), a non-empty list of "
            f"device ids (each at least 0), or a string such as auto"
        )


def nodes(cfg: Trainer, env: Mapping[str, str] = os.environ) -> None:
    """trainer.num_nodes > 1 outside a cluster job would wait forever for the other nodes: refuse it."""
    if cfg.num_nodes > 1 and not any(env.get(v) for v in CLUSTER):
        raise ValueError(
            f"trainer.num_nodes={cfg.num_nodes} outside a cluster job (no {' or '.join(CLUSTER)}): "
            "it would wait for the other nodes forever; `bench slurm` writes the job that runs it"
        )


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
