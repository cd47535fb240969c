"""How the training step is made fast without changing its math: params.yaml's `speed` section.

These small nets are bound by per-kernel launch and Python overhead, not by arithmetic:
torch.compile fuses kernels ("reduce-overhead" also replays the forward and backward as CUDA graphs),
channels_last suits bf16 convolutions (SGD's fused kernel is the optimizer's, bench.train.module.sgd).
The Lightning path and `bench perf`'s bare loop both build their step from here and time it with `sync`;
tests/test_perf.py checks that the optimised step follows the eager one's loss trajectory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.schema import Speed


def memory_format(cfg: Speed) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def prepare(model: nn.Module, cfg: Speed) -> nn.Module:
    """The network in the memory format its inputs will have (in place; returns it)."""
    return model.to(memory_format=memory_format(cfg))


def training_forward(model: nn.Module, cfg: Speed) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network's forward for training steps, as a function: compiled when `speed.compile` names a mode.

    A function, not a module, so that holding it adds no second copy of the weights to a state dict,
    and checkpoints stay interchangeable between compiled and eager runs. Evaluation and the
    diagnostics call the eager module, whose batch sizes vary.
    """
    if cfg.compile is None:
        return model.__call__
    return torch.compile(model.forward, mode=cfg.compile)


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that a clock read after it times them (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
