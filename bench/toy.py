"""`bench toy`: Balduzzi et al. 2017's toy setting, the reference for shattered gradients.

Scalar input, 256 points on [-2, 2], fully connected width 200, He init, BN: the lag-1 correlation of
dy/dx along the line vs depth, plain vs residual. The paper: plain nets decay like 2^-L (white noise),
residual nets like 1/sqrt(L) (brown noise).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import plots
from bench.config import Toy
from bench.diagnostics import shattering_score
from bench.files import write_json


def toy_shattering(
    depth: int, residual: bool, width: int = 200, points: int = 256, seed: int = 0, batchnorm: bool = True
) -> torch.Tensor:
    """dy/dx of the paper's toy net at `points` equally spaced scalar inputs on [-2, 2]; returns (points,).

    Balduzzi et al. 2017, Sec. 2: fully connected, width 200, ReLU, He init, scalar input and output.
    h_0 = x w + b, then `depth` layers of layer(h) = W relu(BN(h)): plain h <- layer(h), residual
    h <- h + layer(h); y = v . h. BN normalises over the points as a batch (no affine, as at init),
    its statistics held fixed when differentiating, so dy/dx is each point's own derivative. The
    input bias (N(0, 1)) puts ReLU kinks inside [-2, 2]; without it the net is positively
    homogeneous and dy/dx only takes two values. The paper's white-noise (plain) vs brown-noise
    (residual) result is with BN; without BN most units never switch along the line and both
    families stay smooth for longer.
    """
    g = torch.Generator().manual_seed(seed)

    def he(n_in: int, n_out: int) -> torch.Tensor:  # He et al. 2015: std sqrt(2 / fan_in)
        return torch.randn(n_in, n_out, generator=g) * math.sqrt(2 / n_in)

    x = torch.linspace(-2, 2, points).unsqueeze(1).requires_grad_()  # (points, 1)
    h = x @ he(1, width) + torch.randn(width, generator=g)  # (points, width)
    for _ in range(depth):
        z = h
        if batchnorm:
            mean, var = z.mean(0).detach(), z.var(0, unbiased=False).detach()  # (width,), fixed statistics
            z = (z - mean) / torch.sqrt(var + 1e-5)
        z = F.relu(z) @ he(width, width)
        h = h + z if residual else z
    y = h @ he(width, 1)  # (points, 1)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    return dydx.squeeze(1)


def run(cfg: Toy) -> dict:
    """{'plain': {depth: [score per seed]}, 'residual': {...}}."""
    return {family: {d: [shattering_score(toy_shattering(d, family == "residual", cfg.width, cfg.points, seed))
                         for seed in range(cfg.seeds)] for d in cfg.depths}
            for family in ("plain", "residual")}


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = {"plain": plots.STYLE["plain_bn"][0], "residual": plots.STYLE["residual_bn"][0]}  # BN nets
    for family, colour in colours.items():
        depths = sorted(results[family])
        means = [statistics.fmean(results[family][d]) for d in depths]
        stds = [statistics.stdev(results[family][d]) if len(results[family][d]) > 1 else 0 for d in depths]
        ax.errorbar(depths, means, yerr=stds, marker="o", capsize=3, color=colour, label=f"{family} (BN)")
    depths = sorted(results["plain"])
    ax.plot(depths, [2.0 ** -d for d in depths], ":", color=colours["plain"], label="$2^{-L}$ (paper, plain)")
    ax.plot(depths, [d ** -0.5 for d in depths], ":", color=colours["residual"], label=r"$1/\sqrt{L}$ (paper, residual)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("depth L (fully connected layers)")
    ax.set_ylabel("lag-1 correlation of dy/dx")
    ax.set_title("Shattered gradients, Balduzzi et al. 2017 toy setting")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.save(fig, path)


def toy(cfg: Toy, out: str | Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(cfg)
    write_json(out / "toy.json", {f: {str(d): v for d, v in r.items()} for f, r in results.items()})
    plot(results, out / "toy_shattering.png")
    return results
