"""BatchNorm's two modes (Ioffe & Szegedy 2015, Sec. 3.1): batch statistics in training, running statistics
at inference. Switching a net between them without a trace, calibrating the running statistics of an
untrained net, the error in each mode, how far training moved BN's scales, and BN at inference as the linear
map it is: folded into the conv before it.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv's name, BN's name) for every conv a BN follows in a `bench.models` net: the stem, each block's
    convs (models' FOLDABLE: a pre-activation block's BN before a conv follows an addition, not a conv), and a
    projection shortcut."""
    pairs = [(model.stem, "0", "1")]
    for b in model.blocks:
        pairs += [(b, conv, norm) for conv, norm in b.FOLDABLE]
        if isinstance(b.shortcut, nn.Sequential):
            pairs.append((b.shortcut, "0", "1"))
    return [(p, c, n) for p, c, n in pairs if isinstance(getattr(p, n, None), BATCHNORM)]


def fold(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every BN folded into the conv before it (torch's fuse_conv_bn_eval:
    W' = W gamma / sqrt(var + eps) per output channel, b' = (b - mean) gamma / sqrt(var + eps) + beta) and
    replaced by the identity. In eval mode BN is this affine map, so the copy computes the same function with
    one layer fewer per conv."""
    folded = copy.deepcopy(model).eval()
    for parent, conv, bn in conv_bn_pairs(folded):
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return folded


@torch.no_grad()
def fold_difference(model: nn.Module, x: torch.Tensor) -> float | None:
    """max |logits - folded logits| / max |logits| over `x` in eval mode: float32 rounding only (about 1e-6);
    None for a net without BN."""
    if not conv_bn_pairs(model):
        return None
    with mode(model, False):
        logits = model(x)
    scale = logits.abs().max().item()
    return (logits - fold(model)(x)).abs().max().item() / scale if scale > 0 else None
