"""BatchNorm's two modes (Ioffe & Szegedy 2015, Sec. 3.1): batch statistics in training, running statistics
at inference. Switching a net between them without a trace, calibrating the running statistics of an
untrained net, the error in each mode, and how far training moved BN's scales.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

BATCHNORM = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm


@contextmanager
def mode(model: nn.Module, train: bool):
    """Put `model` in train or eval mode for the block; restore every submodule's own flag after."""
    flags = [m.training for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for m, flag in zip(model.modules(), flags):
            m.training = flag


@contextmanager
def batch_statistics(model: nn.Module):
    """Train mode, so BN normalises by the batch's own statistics, without a lasting trace: the
    running mean/var and batch counters that train-mode forwards update are restored on exit."""
    bns = [m for m in model.modules() if isinstance(m, BATCHNORM)]
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in bns]
    try:
        with mode(model, True):
            yield model
    finally:
        with torch.no_grad():
            for m, buffers in zip(bns, saved):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Set every BN layer's running statistics to the average batch statistics over `x`.

    At initialisation the running stats are (0, 1), so eval-mode BN is the identity and a fresh
    `residual_bn` net behaves like `residual`. Calibrating first makes eval-mode measurements of an
    untrained net reflect the normalisation it has in training. Mutates the buffers on purpose.
    """
    bns = [m for m in model.modules() if isinstance(m, BATCHNORM)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative average over the batches below
    with mode(model, True):
        for chunk in x.split(batch_size):
            model(chunk)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model


@torch.no_grad()
def error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 error of `model` in whatever mode it is in."""
    wrong = sum((model(xb).argmax(1) != yb).sum().item() for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return wrong / len(y)


def train_vs_eval_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> dict:
    """Error with BN on batch statistics (train mode, batches of `batch_size`) vs running statistics
    (eval mode). A gap means the running statistics do not describe these inputs. Running statistics
    are left unchanged. Returns {"train_mode": float, "eval_mode": float}.
    """
    with batch_statistics(model):
        train = error(model, x, y, batch_size)
    with mode(model, False):
        evaluated = error(model, x, y, batch_size)
    return {"train_mode": train, "eval_mode": evaluated}


def bn_scale_change(model: nn.Module) -> float | None:
    """Mean |gamma - 1| over every BN scale: how far training moved BN's scales (None without BN)."""
    gammas = [m.weight.detach().flatten() for m in model.modules() if isinstance(m, BATCHNORM) and m.weight is not None]
    return (torch.cat(gammas) - 1).abs().mean().item() if gammas else None
