"""Shattered gradients (Balduzzi et al. 2017, Sec. 2-3): how the gradient of a network's output w.r.t. its input
decorrelates between nearby inputs as depth grows.

The paper's scalar input line is, for images, the straight path between two images. Its curves
(2^-L for plain nets, 1/sqrt(L) for residual nets) describe the correlation between the gradients at
*distinct* inputs (`gradient_correlations`); the lag-1 autocorrelation along the path is a second,
smoother measure of the same thing (`gradient_autocorrelation`).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.diagnostics.batchnorm import mode


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
    with mode(model, False):
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


def shattering(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pairs: int, points: int) -> dict:
    """The gradient correlation on the paths between `pairs` image pairs (x[2k], x[2k+1]), k < pairs:
    the target is the first image's class. Per pair, the mean correlation between gradients at distinct
    points of the path, and the lag-1 autocorrelation; their means and sample stds over the pairs, and
    the mean correlation against the distance between the points (in steps of 1 / (points - 1)).
    A zero gradient (a saturated output) has no direction: its pair is NaN.
    """
    matrices, lag1 = [], []
    for k in range(pairs):
        grads = input_gradients_along_path(model, x[2 * k], x[2 * k + 1], int(y[2 * k]), points)
        matrices.append(gradient_correlations(grads))
        lag1.append(shattering_score(grads))
    distinct = [mean_off_diagonal(c) for c in matrices]
    mean = lambda v: torch.tensor(v, dtype=torch.float64).mean().item()  # NaN in, NaN out
    spread = lambda v: torch.tensor(v, dtype=torch.float64).std().item() if len(v) > 1 else 0.0
    return {
        "correlation": mean(distinct),
        "correlation_std": spread(distinct),
        "correlation_pairs": distinct,
        "lag1": mean(lag1),
        "lag1_std": spread(lag1),
        "by_distance": correlation_by_distance(torch.stack(matrices).mean(0)).tolist(),
    }
