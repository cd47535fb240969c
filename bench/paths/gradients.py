"""The gradient carried by paths of each length (Veit, Wilber & Belongie 2016, Sec. 6, Fig. 6).

A residual net of n blocks unrolls into 2^n paths; C(n, k) of them pass through k residual branches. The paper
feeds a batch forward through the whole net, then in the backward pass picks k blocks at random: in those the
gradient flows through the residual branch only, in the other n - k through the skip connection only, so that
the gradient reaching the input is that of a single path of length k. The forward pass is unchanged. Its
gradient norm decays exponentially with k (Fig. 6b); times the number of paths, C(n, k), it is the total
gradient that paths of length k carry (Fig. 6c), which sits on paths far shorter than the net (5 to 17 blocks
of 54 in the paper); `band` reads off the lengths that hold the central share of it.

Here, with the forward fixed (eval mode: BN is a fixed linear map), the backward pass is linear, so the gated
gradients of all 2^n subsets sum to the ordinary input gradient. Deviations: one fixed batch rather than 1,000
random training batches; the per-path norm is a mean over `samples` random k-subsets (k = 0 and k = n have one);
the norm is the L2 norm over the whole batch of the gradient of the batch's mean cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROUNDING = 1e-12  # a cumulative share that reaches a quantile up to rounding reaches it


@contextmanager
def gates(model: nn.Module) -> Iterator[list[bool]]:
    """Hooks that gate the backward pass of each skip block; yields `through`, one flag per skip block in order,
    read at backward time: True passes the gradient through the branch only (its branch_end's output), False through the
    shortcut only. The forward pass is unchanged; the model is in eval mode for the block, each submodule's flag
    restored after, and the hooks removed. Raises ValueError on a net without skip blocks."""
    blocks = [b for b in model.blocks if b.skip]
    if not blocks:
        name = getattr(model, "variant", type(model).__name__)
        raise ValueError(f"{name} has no skip blocks: a plain net has a single path")
    through = [False] * len(blocks)

    def gate(i: int, branch: bool):
        def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
            out = out.view_as(out)  # a node of its own: an identity shortcut's output is its input
            if out.requires_grad:  # under no_grad there is no backward to gate
                out.register_hook(lambda g: g * float(through[i] == branch))
            return out

        return hook

    flags, handles = [m.training for m in model.modules()], []
    try:
        model.eval()
        handles += [b.branch_end.register_forward_hook(gate(i, True)) for i, b in enumerate(blocks)]
        handles += [b.shortcut.register_forward_hook(gate(i, False)) for i, b in enumerate(blocks)]
        yield through
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(model.modules(), flags):
            m.training = flag


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the mean cross-entropy, the input it is a function of: a copy of x that requires grad)."""
    x = x.detach().clone().requires_grad_(True)
    return F.cross_entropy(model(x), y), x


def gated_input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, through_branch: set[int]) -> torch.Tensor:
    """The gradient of the mean cross-entropy w.r.t. `x` (same shape) along the paths that take the branch in the
    skip blocks (indexed among the skip blocks, in order) of `through_branch` and the shortcut in the others."""
    with gates(model) as through:
        through[:] = [i in through_branch for i in range(len(through))]
        loss, x = _loss(model, x, y)
        (g,) = torch.autograd.grad(loss, x)
    return g


def path_gradient_norms(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int, generator: torch.Generator
) -> dict:
    """Fig. 6 from one forward pass: per path length k = 0..n, the input-gradient norm of a path of length k
    (mean and population std over `samples` random k-subsets, drawn as randperm(n)[:k]; k = 0 and k = n once),
    the number of such paths C(n, k), and the total C(n, k) x per-path norm."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    with gates(model) as through:
        n = len(through)
        loss, x = _loss(model, x, y)
        per_path, std = [], []
        for k in range(n + 1):
            norms = []
            for _ in range(samples if 0 < k < n else 1):
                chosen = set(torch.randperm(n, generator=generator)[:k].tolist())
                through[:] = [i in chosen for i in range(n)]
                (g,) = torch.autograd.grad(loss, x, retain_graph=True)
                norms.append(float(g.norm()))
            per_path.append(float(np.mean(norms)))
            std.append(float(np.std(norms)))
    ks = list(range(n + 1))
    paths = [math.comb(n, k) for k in ks]
    total = [c * p for c, p in zip(paths, per_path)]
    return {"blocks": n, "k": ks, "per_path": per_path, "per_path_std": std, "paths": paths, "total": total}


def band(total: list[float], mass: float = 0.9) -> tuple[int, int]:
    """The path lengths (lo, hi) that hold the central `mass` of the total gradient: the smallest k whose cumulative
    share reaches (1 - mass) / 2, and the smallest whose share reaches 1 - (1 - mass) / 2."""
    t = np.asarray(total, dtype=float)
    if not (np.isfinite(t).all() and (t >= 0).all() and t.sum() > 0):
        raise ValueError(f"the total gradient must be finite, non-negative and positive somewhere, not {total}")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], not {mass}")
    share = np.cumsum(t) / t.sum()
    lo, hi = (int(np.argmax(share >= q - ROUNDING)) for q in ((1 - mass) / 2, 1 - (1 - mass) / 2))
    return lo, hi
