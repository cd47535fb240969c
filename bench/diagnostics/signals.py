"""Vanishing and exploding signals (He et al. 2016, Sec. 4.2 and Fig. 7): each 3x3 layer's response std,
the backward signal per block, and the forward variance of the residual stream.

Pure torch over a `bench.models` network (it addresses `model.blocks`), which each function leaves as it
found it: train/eval flags, BN running statistics, parameters and `.grad`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.diagnostics.batchnorm import batch_statistics, mode


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN where the denominator is 0 or either is not finite: never inf from a 0/0."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def block_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per block, for one batch: the RMS per element of d loss / d (its output), and ||dW|| / ||W|| over
    its parameters (the relative step SGD would take, without the learning rate).

    `ratio`, the backward signal's gain: the product over the blocks whose output has their input's shape of
    RMS(d loss / d input) / RMS(d loss / d output), each RMS over the units that are on (activation > 0; every
    block's input and output is a ReLU's). Above 1 the gradient grows towards the input (exploding), below 1 it
    shrinks (vanishing), and a net with no depth effect reads exactly 1: identity blocks, as a Fixup net's at
    initialisation. Left out, since neither is depth: the blocks that change shape (width and resolution change
    there: 4x the elements in stage 1 as in stage 3, and He init halves the per-element variance), and the units
    that are off (a ReLU passes no gradient to a unit at 0, which carries no signal either). A first-block /
    last-block RMS ratio over all units would read about 0.4 for this architecture with no depth effect.

    A loss saturated at 0 has no gradient: the ratio is then NaN and `saturated` is true. Loss: mean
    cross-entropy; BN on the batch's statistics, as in the SGD step these gradients would drive, with running
    statistics left untouched; `.grad` untouched.
    """
    inputs, outputs = [], []  # each block's input and output activation, still in the graph

    def keep(module, args, out) -> None:  # None: the block's output stays as it is
        inputs.append(args[0])
        outputs.append(out)

    hooks = [b.register_forward_hook(keep) for b in model.blocks]
    params = [list(b.parameters()) for b in model.blocks]
    try:
        with batch_statistics(model):  # backward inside: BN saved tensors must not change under it
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, inputs + outputs + [p for ps in params for p in ps])
    finally:
        for h in hooks:
            h.remove()
    k = len(outputs)
    to_input, activation, rest = grads[:k], grads[k : 2 * k], list(grads[2 * k :])
    relative = []
    for ps in params:
        block_grads, rest = rest[: len(ps)], rest[len(ps) :]
        norm = lambda ts: torch.sqrt(sum(t.double().pow(2).sum() for t in ts)).item()
        relative.append(ratio(norm(block_grads), norm(ps)))
    rms = lambda g: g.double().pow(2).mean().sqrt().item()
    on = lambda g, a: g[a > 0].double().pow(2).mean().sqrt().item() if (a > 0).any() else math.nan
    gains = [
        ratio(on(gi, a), on(go, b))
        for gi, go, a, b in zip(to_input, activation, inputs, outputs)
        if a.shape == b.shape  # the blocks that keep their shape
    ]
    gain = math.prod(gains) if gains else math.nan
    return {
        "activation_rms": [rms(g) for g in activation],
        "relative_weight": relative,
        "ratio": gain,
        "saturated": math.isnan(gain),
    }


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, modules: list[nn.Module]) -> list[torch.Tensor]:
    """Run `model` on `x` in eval mode; return each of `modules`' outputs, in the order given."""
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, out)) for i, m in enumerate(modules)
    ]
    try:
        with mode(model, False):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(modules))]


def layers_3x3(model: nn.Module) -> list[nn.Module]:
    """Where each 3x3 conv layer's response is read: its BN (or, without BN, the Identity after the conv;
    Fixup's multiplier after a branch's last conv; a pre-activation block's conv2 itself, which no BN follows).
    The stem first, then conv1 and conv2 of each block."""
    return [model.stem_response, *(m for b in model.blocks for m in b.responses)]


def response_stds(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Std of every 3x3 layer's response, He et al. 2016 Fig. 7: after BN, before the nonlinearity or the
    addition, over all elements of the batch, in layer order.

    Eval mode, as for a trained model at test time; on an untrained BN net run `batchnorm.calibrate_bn` first,
    else BN is the identity. The paper's ordering (residual responses smaller than plain ones) needs
    BN's learned scales to have moved from 1: see `batchnorm.bn_scale_change`.
    """
    return [r.std().item() for r in _outputs(model, x, layers_3x3(model))]


def forward_variance(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Variance of each block's output (the stream), over all elements of the batch; eval mode.

    Without BN a residual stream grows geometrically with depth under He init (the branch adds
    variance comparable to its input's), while BN keeps a plain stream's scale fixed.
    """
    return [h.var().item() for h in _outputs(model, x, list(model.blocks))]
