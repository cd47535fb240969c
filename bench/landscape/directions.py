"""Li, Xu, Taylor, Studer and Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets", Sec. 4: random
directions normalised filter by filter, so that a step along them is as large, relative to each filter, in every
net and at every depth, whatever the scale of its weights.

For each parameter with two or more dimensions (a conv's filters, the classifier's rows), a Gaussian direction d of
its shape; each filter d_i (a slice along the first dimension) is rescaled to the norm of the same filter of the
weights: d_i <- d_i / ||d_i|| * ||theta_i||. Parameters of one dimension or none (biases, BN's scale and shift,
Fixup's scalars) get a zero direction, as the official code's `--xignore biasbn` does; BN's running statistics are
buffers and stay as trained.

The `loss-landscapes` package on PyPI does not follow this definition (uniform [0, 1] directions, biases and BN
perturbed, another scaling), so these few lines are written here.
"""

from __future__ import annotations

import torch

EPS = 1e-10  # the official code's guard against a zero direction


def filter_normalised(params: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One direction for `params` (name -> tensor, in order), drawn from `generator`."""
    direction = {}
    for name, theta in params.items():
        if theta.dim() <= 1:
            direction[name] = torch.zeros_like(theta)
            continue
        d = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        shape = (-1,) + (1,) * (theta.dim() - 1)
        d_norm = d.flatten(1).norm(dim=1).view(shape)
        theta_norm = theta.detach().flatten(1).norm(dim=1).view(shape)
        direction[name] = d / (d_norm + EPS) * theta_norm
    return direction


def two(params: dict[str, torch.Tensor], seed: int) -> tuple[dict, dict]:
    """The two directions of a 2-D plot (the first is the 1-D plot's), from one seed: the same seed and the same
    parameters give the same directions."""
    g = torch.Generator().manual_seed(seed)
    return filter_normalised(params, g), filter_normalised(params, g)
