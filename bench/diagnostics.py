"""Measurements of the pathologies the suite compares: shattered gradients (Balduzzi et al. 2017),
vanishing/exploding signals (He et al. 2016, Fig. 7), block lesions (Veit et al. 2016) and BatchNorm's
train/eval gap (Ioffe & Szegedy 2015).

Pure torch functions over a `bench.models` network (they address `model.blocks`) and tensors. Each one
leaves the model as it found it: train/eval flags, BN running statistics, parameters and `.grad`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_BN = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm


@contextmanager
def _mode(model: nn.Module, train: bool):
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
        with _mode(model, True):
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
    with _mode(model, True):
        for chunk in x.split(batch_size):
            model(chunk)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model


# --- Shattered gradients (Balduzzi et al. 2017) ---------------------------------------------------

def input_gradients_along_path(
    model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, target: int, points: int = 256, batch_size: int = 64
) -> torch.Tensor:
    """d logit_target / d input at `points` inputs x0 + a (x1 - x0), a equally spaced on [0, 1].

    The 1-D path between two images plays the role of the paper's scalar input line (Sec. 2). Eval
    mode, so each point's gradient is that of a fixed function, not coupled to the others through BN.
    Returns (points, C*H*W).
    """
    alphas = torch.linspace(0, 1, points, device=x0.device).view(-1, *[1] * x0.dim())  # (points, 1, 1, 1)
    path = x0 + alphas * (x1 - x0)  # (points, C, H, W)
    grads = []
    with _mode(model, False):
        for chunk in path.split(batch_size):
            chunk = chunk.detach().requires_grad_()
            # samples are independent in eval mode, so the gradient of the sum is each sample's own
            (g,) = torch.autograd.grad(model(chunk)[:, target].sum(), chunk)
            grads.append(g.flatten(1))
    return torch.cat(grads)


def gradient_autocorrelation(grads: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Correlation between the gradients at points i and i + lag, for lag = 1 .. max_lag.

    The Pearson correlation between the stacked gradients g_1..g_{n-lag} and g_{1+lag}..g_n, pooled
    over i and over the gradient's coordinates. For scalar gradients (the paper's toy) this is the
    lagged autocorrelation of the signal dy/dx, Balduzzi et al. Fig. 2: about 1 for brown noise
    (a random walk), 0 for white noise. A constant, non-scalar gradient (a linear model) scores 1.
    `grads`: (points, D) or (points,). Returns (max_lag,).
    """
    g = grads.reshape(len(grads), -1).double()  # (points, D)
    return torch.stack(
        [torch.corrcoef(torch.stack([g[:-lag].flatten(), g[lag:].flatten()]))[0, 1] for lag in range(1, max_lag + 1)]
    )


def gradient_correlations(grads: torch.Tensor) -> torch.Tensor:
    """The correlation matrix of gradients at distinct inputs: C[i, j] = <g_i, g_j> / (|g_i| |g_j|).

    Balduzzi et al. 2017's correlation E[g(x) g(x')] / sqrt(E[g(x)^2] E[g(x')^2]) over random
    weights, estimated by averaging over the gradient's coordinates (uncentred: at initialisation a
    gradient coordinate has mean 0 over the weights). A linear model, whose gradient is the same at
    every input, gives 1 everywhere; independent white-noise gradients give about 0 off the diagonal.
    A zero gradient has no direction: its row and column are NaN. `grads`: (points, D). Returns (points, points).
    """
    g = grads.reshape(len(grads), -1).double()
    norms = g.norm(dim=1)
    unit = g / norms.unsqueeze(1)  # NaN rows where a gradient is exactly 0
    return unit @ unit.T


def mean_off_diagonal(c: torch.Tensor) -> float:
    """Mean of a correlation matrix off its diagonal: the average correlation between distinct inputs."""
    n = len(c)
    return ((c.sum() - c.diagonal().sum()) / (n * n - n)).item()


def correlation_by_distance(c: torch.Tensor) -> torch.Tensor:
    """Mean correlation between inputs k steps apart along the path, k = 0 .. points - 1 (k = 0 is 1)."""
    return torch.stack([c.diagonal(k).mean() for k in range(len(c))])


def shattering_score(grads: torch.Tensor) -> float:
    """Lag-1 gradient correlation, one number per model: 1 = smooth gradients, 0 = shattered (white noise)."""
    return gradient_autocorrelation(grads, 1)[0].item()


# --- Vanishing / exploding signals ----------------------------------------------------------------

def block_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per block, the norm of d loss / d (its parameters) and d loss / d (its output), for one batch.

    Loss: mean cross-entropy. BN uses the batch's statistics, as in the SGD step these gradients
    would drive, with running statistics left untouched. `ratio` = first block's weight-gradient
    norm / last block's: far from 1 means vanishing (< 1) or exploding (> 1) gradients.
    Returns {"weight": [...], "activation": [...], "ratio": float}; `.grad` is not touched.
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
    activation, rest = grads[: len(outputs)], list(grads[len(outputs):])
    weight = []
    for ps in params:
        block_grads, rest = rest[: len(ps)], rest[len(ps):]
        weight.append(torch.sqrt(sum(g.pow(2).sum() for g in block_grads)).item())
    return {"weight": weight, "activation": [g.norm().item() for g in activation], "ratio": weight[0] / weight[-1] if weight[-1] else math.inf}


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, modules: list[nn.Module]) -> list[torch.Tensor]:
    """Run `model` on `x` in eval mode; return each of `modules`' outputs, in the order given."""
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, out)) for i, m in enumerate(modules)
    ]
    try:
        with _mode(model, False):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(modules))]


def response_stds(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Std of each block's response, He et al. 2016 Fig. 7: f(x) after its last BN, before the addition.

    Read at `block.bn2` (an Identity without BN, so then conv2's output), over all elements of the
    batch. Eval mode, as for a trained model at test time; on an untrained BN net run `calibrate_bn`
    first, else BN is the identity.
    """
    return [r.std().item() for r in _outputs(model, x, [b.bn2 for b in model.blocks])]


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
    keeps_shape = block.conv1.stride == (1, 1) and block.conv1.in_channels == block.conv2.out_channels
    return block.skip or keeps_shape


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


def lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> dict:
    """Test error of the intact model and with each block deleted in turn (Veit et al. 2016, Sec. 4).

    Residual blocks lose their branch and keep the skip; plain blocks become the identity, except
    those that change shape (downsampling), which cannot be deleted: None. Eval mode. Increases are
    over the deletable blocks. Returns {"intact", "per_block", "mean_increase", "max_increase"}.
    """
    with _mode(model, False):
        intact = _error(model, x, y, batch_size)
        per_block = []
        for i, block in enumerate(model.blocks):
            if not deletable(block):
                per_block.append(None)
                continue
            with deleted(model, i):
                per_block.append(_error(model, x, y, batch_size))
    increases = [e - intact for e in per_block if e is not None]
    return {
        "intact": intact,
        "per_block": per_block,
        "mean_increase": sum(increases) / len(increases) if increases else None,
        "max_increase": max(increases) if increases else None,
    }


# --- BatchNorm (Ioffe & Szegedy 2015) -------------------------------------------------------------

def train_vs_eval_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> dict:
    """Error with BN on batch statistics (train mode, batches of `batch_size`) vs running statistics
    (eval mode). A gap means the running statistics do not describe these inputs. Running statistics
    are left unchanged. Returns {"train_mode": float, "eval_mode": float}.
    """
    with batch_statistics(model):
        train = _error(model, x, y, batch_size)
    with _mode(model, False):
        evaluated = _error(model, x, y, batch_size)
    return {"train_mode": train, "eval_mode": evaluated}


# --- All of them on one probe set -----------------------------------------------------------------

def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, points: int = 128) -> dict:
    """Every diagnostic above on a fixed probe batch (x: (N, C, H, W) normalised, y: (N,)).

    Shattering along the path from probe image 0 to image 1 (target: image 0's class). Returns the
    scalar summaries and the per-block lists, JSON-ready.
    """
    grads = input_gradients_along_path(model, x[0], x[1], int(y[0]), points)
    norms = block_gradient_norms(model, x, y)
    variance = forward_variance(model, x)
    lesion = lesion_errors(model, x, y)
    bn = train_vs_eval_error(model, x, y)
    return {
        "shattering": shattering_score(grads),
        "autocorrelation": gradient_autocorrelation(grads, 8).tolist(),
        "grad_ratio": norms["ratio"],
        "weight_grad_norm": norms["weight"],
        "activation_grad_norm": norms["activation"],
        "response_std": response_stds(model, x),
        "forward_variance": variance,
        "variance_growth": (variance[-1] / variance[0]) ** (1 / max(1, len(variance) - 1)) if variance[0] else None,
        "lesion_error": lesion["per_block"],
        "intact_error": lesion["intact"],
        "lesion_mean_increase": lesion["mean_increase"],
        "lesion_max_increase": lesion["max_increase"],
        "bn_train_mode_error": bn["train_mode"],
        "bn_eval_mode_error": bn["eval_mode"],
    }


SCALARS = ("shattering", "grad_ratio", "variance_growth", "intact_error", "lesion_mean_increase",
           "lesion_max_increase", "bn_train_mode_error", "bn_eval_mode_error")
