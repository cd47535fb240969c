"""Measurements of the pathologies the suite compares: vanishing/exploding gradients and signals (He
et al. 2016, Fig. 7), block lesions (Veit et al. 2016) and BatchNorm's train/eval gap (Ioffe & Szegedy
2015). Shattered gradients are bench.diagnostics.shattering's; bench.diagnostics.probe runs them all on a cell's probe batch.

Pure torch functions over a `bench.models` network (they address `model.blocks`) and tensors. Each one
leaves the model as it found it: train/eval flags, BN running statistics, parameters and `.grad`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from bench.record import AT_CHANCE

_BN = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm


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
    bns = [m for m in model.modules() if isinstance(m, _BN)]
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
    bns = [m for m in model.modules() if isinstance(m, _BN)]
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


# --- Vanishing / exploding signals ----------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN where the denominator is 0 or either is not finite: never inf from a 0/0."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def block_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per block, for one batch: the RMS per element of d loss / d (its output), and ||dW|| / ||W|| over
    its parameters (the relative step SGD would take, without the learning rate).

    The activation-gradient RMS is the backward signal itself, comparable between blocks of different
    widths; a weight-gradient norm is not (it grows with the number of weights). `ratio` = first
    block's activation-gradient RMS / last block's: above 1 the gradient grows towards the input
    (exploding), below 1 it shrinks (vanishing). A loss saturated at 0 has no gradient: the ratio is
    then NaN and `saturated` is true. Loss: mean cross-entropy; BN on the batch's statistics, as in
    the SGD step these gradients would drive, with running statistics left untouched; `.grad` untouched.
    """
    outputs = []  # each block's output activation, still in the graph
    hooks = [b.register_forward_hook(lambda m, args, out: outputs.append(out)) for b in model.blocks]
    params = [list(b.parameters()) for b in model.blocks]
    try:
        with batch_statistics(model):  # backward inside: BN saved tensors must not change under it
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, outputs + [p for ps in params for p in ps])
    finally:
        for h in hooks:
            h.remove()
    activation, rest = grads[: len(outputs)], list(grads[len(outputs) :])
    relative = []
    for ps in params:
        block_grads, rest = rest[: len(ps)], rest[len(ps) :]
        norm = lambda ts: torch.sqrt(sum(t.double().pow(2).sum() for t in ts)).item()
        relative.append(ratio(norm(block_grads), norm(ps)))
    rms = [g.double().pow(2).mean().sqrt().item() for g in activation]
    first_over_last = ratio(rms[0], rms[-1])
    return {
        "activation_rms": rms,
        "relative_weight": relative,
        "ratio": first_over_last,
        "saturated": math.isnan(first_over_last),
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
    Fixup's multiplier after a branch's last conv). The stem first, then conv1 and conv2 of each block."""
    return [model.stem[1], *(m for b in model.blocks for m in (b.bn1, b.bn2))]


def response_stds(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Std of every 3x3 layer's response, He et al. 2016 Fig. 7: after BN, before the nonlinearity or the
    addition, over all elements of the batch, in layer order.

    Eval mode, as for a trained model at test time; on an untrained BN net run `calibrate_bn` first,
    else BN is the identity. The paper's ordering (residual responses smaller than plain ones) needs
    BN's learned scales to have moved from 1: see `bn_scale_change`.
    """
    return [r.std().item() for r in _outputs(model, x, layers_3x3(model))]


def bn_scale_change(model: nn.Module) -> float | None:
    """Mean |gamma - 1| over every BN scale: how far training moved BN's scales (None without BN)."""
    gammas = [m.weight.detach().flatten() for m in model.modules() if isinstance(m, _BN) and m.weight is not None]
    return (torch.cat(gammas) - 1).abs().mean().item() if gammas else None


def forward_variance(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Variance of each block's output (the stream), over all elements of the batch; eval mode.

    Without BN a residual stream grows geometrically with depth under He init (the branch adds
    variance comparable to its input's), while BN keeps a plain stream's scale fixed.
    """
    return [h.var().item() for h in _outputs(model, x, list(model.blocks))]


# --- Lesions (Veit et al. 2016) -------------------------------------------------------------------


class _Deleted(nn.Module):
    """A block with its branch f removed: relu(shortcut(x)). A plain block's shortcut is the identity
    and its input is post-ReLU, so it becomes x itself."""

    def __init__(self, shortcut: nn.Module):
        super().__init__()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x))


def deletable(block: nn.Module) -> bool:
    """A residual block always is (its shortcut carries the signal); a plain block only if it keeps the shape."""
    return block.skip or not downsampling(block)


@contextmanager
def deleted(model: nn.Module, i: int):
    """Model with block i deleted for the duration, then the original block put back."""
    block = model.blocks[i]
    model.blocks[i] = _Deleted(block.shortcut)
    try:
        yield model
    finally:
        model.blocks[i] = block


@torch.no_grad()
def _error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 error of `model` in whatever mode it is in."""
    wrong = sum((model(xb).argmax(1) != yb).sum().item() for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return wrong / len(y)


def downsampling(block: nn.Module) -> bool:
    """A block that changes the shape (stride or channels): its shortcut, not the identity, carries the signal."""
    return block.conv1.stride != (1, 1) or block.conv1.in_channels != block.conv2.out_channels


def lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chance: float, batch_size: int = 500) -> dict:
    """Test error of the intact model and with each block deleted in turn (Veit et al. 2016, Sec. 4).

    Residual blocks lose their branch and keep the skip; plain blocks become the identity, except
    those that change shape, which cannot be deleted: None. Eval mode. The increases over the intact
    error are summarised apart for the downsampling blocks, whose shortcut is a projection or a
    subsampling: deleting their branch costs more, and it would dominate a single maximum. A model
    whose intact error is at chance (at least AT_CHANCE x `chance`, the chance error) has nothing to lose: `at_chance` is
    then true and its increases say nothing about robustness.
    """
    with mode(model, False):
        intact = _error(model, x, y, batch_size)
        per_block = []
        for i, block in enumerate(model.blocks):
            if not deletable(block):
                per_block.append(None)
                continue
            with deleted(model, i):
                per_block.append(_error(model, x, y, batch_size))
    down = [downsampling(b) for b in model.blocks]

    def increases(in_down: bool) -> list[float]:
        return [e - intact for e, d in zip(per_block, down) if e is not None and d == in_down]

    mean = lambda v: sum(v) / len(v) if v else None
    return {
        "intact": intact,
        "per_block": per_block,
        "downsampling": down,
        "at_chance": intact >= AT_CHANCE * chance,
        "mean_increase": mean(increases(False)),
        "max_increase": max(increases(False), default=None),
        "downsampling_mean_increase": mean(increases(True)),
    }


# --- BatchNorm (Ioffe & Szegedy 2015) -------------------------------------------------------------


def train_vs_eval_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> dict:
    """Error with BN on batch statistics (train mode, batches of `batch_size`) vs running statistics
    (eval mode). A gap means the running statistics do not describe these inputs. Running statistics
    are left unchanged. Returns {"train_mode": float, "eval_mode": float}.
    """
    with batch_statistics(model):
        train = _error(model, x, y, batch_size)
    with mode(model, False):
        evaluated = _error(model, x, y, batch_size)
    return {"train_mode": train, "eval_mode": evaluated}
