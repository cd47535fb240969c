"""`bench toy`: Balduzzi et al. 2017's toy setting, the reference for shattered gradients.

The net (Sec. 2 of the paper): a scalar input x at `points` equally spaced values on [-2, 2], `depth`
fully connected ReLU layers of width 200, He init, BN, plain or residual, a scalar output y = v . h_L.
Three numbers per net at initialisation: two measures of how shattered dy/dx is, and the gradient's size:

correlation -- the statistic the paper's curves describe (Thm. 1: 2^-L for plain nets; Thm. 3: 1/sqrt(L)
    for resnets with BN, its rescaling factor beta = 1 as here): the correlation over the random weights
    between the gradients at two distinct inputs,
        R(i, j) = E[f'(x_i) f'(x_j)] / sqrt(E[f'(x_i)^2] E[f'(x_j)^2]).
    f'(x) = v . J(x), with J(x) = d h_L / d x in R^width the Jacobian of the last hidden layer, and the
    readout v ~ N(0, 2/width I) is independent of J, so E_v[f'(x_i) f'(x_j)] = (2/width) <J(x_i), J(x_j)>:
    the expectation over v is exact and R(i, j) = cos(J(x_i), J(x_j)) for one draw of the hidden weights,
    whose sums over the `width` units stand in for the expectation over them (the paper's proof sums over
    independent paths through the units). The theorems take the activation patterns at x_i and x_j to be
    independent; along the line near neighbours share theirs, so the statistic is R averaged over all
    pairs i != j of the points (the typical pair, not the nearest): one number per net, spread over seeds.
lag1 -- the lag-1 autocorrelation of one net's signal dy/dx along the line (the paper's Fig. 2 ACF at
    lag 1): how alike the gradients at neighbouring points 4/(points-1) apart are. A different quantity:
    it stays near 1 until the gradient shatters at the points' own spacing, so the paper's curves do not
    apply to it.
gradient_moment -- the gradient's second moment, E_v[f'(x)^2] = (2/width) |J(x)|^2 averaged over the points:
    the quantity whose growth with depth Theorem 3 makes an assumption about. Free: it reuses J.

What is measured against what is assumed. Each family's correlation and gradient moment are fitted as power
laws, log(mean over seeds) against log L by least squares over the depths run (finite positive means only);
toy.json holds the fitted exponents and the figure's legend prints them. Theorem 3's 1/sqrt(L) for resnets
with BN rests on the gradient's variance growing linearly in L. This toy's residual net (BN inside the
branch, h <- h + W relu(BN(h))) does not satisfy it: its measured gradient moment grows faster than linearly
(exponent `gradient_moment_slope/residual` in toy.json; a test holds it above 1), and its correlation falls
faster than 1/sqrt(L) (`slope/residual`). So the 1/sqrt(L) curve is drawn as Theorem 3's statement under its
assumption, not as a prediction for this net. For plain nets the paper's 2^-L is no power law: their fitted
exponent only summarises in one number the decay down to the seeds' noise floor.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import jvp

from bench import plots
from bench.diagnostics.shattering import gradient_correlations, mean_off_diagonal, shattering_score
from bench.files import write_json
from bench.schema import Toy

FAMILIES = ("plain", "residual")
STATISTICS = ("correlation", "lag1", "gradient_moment")


def he(n_in: int, n_out: int, g: torch.Generator) -> torch.Tensor:
    """He et al. 2015: Gaussian weights with std sqrt(2 / fan_in), so ReLU layers keep the signal's scale."""
    return torch.randn(n_in, n_out, generator=g, dtype=torch.float64) * math.sqrt(2 / n_in)


def init_weights(depth: int, width: int, seed: int) -> dict:
    """The toy net's weights: input layer (w, b), `depth` hidden layers, readout v; one seed, one net.

    The input bias b ~ N(0, 1) puts ReLU kinks inside [-2, 2] when there is no BN (with BN the centring
    removes it); without it the net is positively homogeneous and dy/dx only takes two values.
    """
    g = torch.Generator().manual_seed(seed)
    w, b = he(1, width, g), torch.randn(width, generator=g, dtype=torch.float64)
    layers = [he(width, width, g) for _ in range(depth)]
    return {"w": w, "b": b, "layers": layers, "v": he(width, 1, g)}


def batch_norm(z: torch.Tensor) -> torch.Tensor:
    """Normalise over the points as a batch (no affine, as at init). The statistics are held fixed
    (detached), so the derivative at a point is that of a fixed function, not coupled to the others."""
    mean, var = z.mean(0).detach(), z.var(0, unbiased=False).detach()
    return (z - mean) / torch.sqrt(var + 1e-5)


def last_hidden(
    x: torch.Tensor, weights: dict, residual: bool, batchnorm: bool = True, activation: Callable = F.relu
) -> torch.Tensor:
    """h_L at inputs x (points, 1): h_0 = x w + b, then layer(h) = W act(BN(h)), plain h <- layer(h) or
    residual h <- h + layer(h). Returns (points, width)."""
    h = x @ weights["w"] + weights["b"]
    for W in weights["layers"]:
        z = activation(batch_norm(h) if batchnorm else h) @ W
        h = h + z if residual else z
    return h


def inputs(points: int) -> torch.Tensor:
    """The paper's line: `points` equally spaced scalar inputs on [-2, 2], as a batch (points, 1)."""
    return torch.linspace(-2, 2, points, dtype=torch.float64).unsqueeze(1)


def toy_jacobian(
    depth: int,
    residual: bool,
    width: int = 200,
    points: int = 256,
    seed: int = 0,
    batchnorm: bool = True,
    activation: Callable = F.relu,
) -> tuple[torch.Tensor, torch.Tensor]:
    """J(x) = d h_L / d x at every point, (points, width), and dy/dx = J v, (points,).

    Forward mode: one pass with tangent dx = 1 at every point carries each point's own derivative
    (the BN statistics are constants), where reverse mode would need one backward pass per unit.
    """
    weights = init_weights(depth, width, seed)
    x = inputs(points)
    _, jacobian = jvp(lambda t: last_hidden(t, weights, residual, batchnorm, activation), (x,), (torch.ones_like(x),))
    return jacobian, (jacobian @ weights["v"]).squeeze(1)


def correlation(jacobian: torch.Tensor) -> float:
    """Mean over pairs i != j of R(i, j) = cos(J(x_i), J(x_j)): the correlation between dy/dx at distinct
    inputs, in expectation over the readout v. 1 for a linear net (J the same at every input)."""
    return mean_off_diagonal(gradient_correlations(jacobian))


def gradient_moment(jacobian: torch.Tensor) -> float:
    """E_v[f'(x)^2] averaged over the points: f' = J v with v ~ N(0, 2/width I), so E_v[f'(x)^2] = (2/width)
    |J(x)|^2, exact in v like `correlation`. Theorem 3 assumes this grows linearly in the depth L."""
    return (2 / jacobian.shape[1] * jacobian.square().sum(1).mean()).item()


def net_statistics(depth: int, residual: bool, width: int, points: int, seed: int) -> dict:
    """The statistics of one net: {"correlation": R averaged over distinct pairs, "lag1": lag-1 ACF,
    "gradient_moment": mean E_v[(dy/dx)^2]}, all from one forward-mode pass."""
    jacobian, dydx = toy_jacobian(depth, residual, width, points, seed)
    return {
        "correlation": correlation(jacobian),
        "lag1": shattering_score(dydx),
        "gradient_moment": gradient_moment(jacobian),
    }


def run(cfg: Toy) -> dict:
    """{family: {depth: {statistic: [per seed]}}} for family in plain, residual and statistic in STATISTICS."""
    results = {}
    for family in FAMILIES:
        results[family] = {}
        for depth in cfg.depths:
            nets = [
                net_statistics(depth, family == "residual", cfg.width, cfg.points, seed) for seed in range(cfg.seeds)
            ]
            results[family][depth] = {s: [net[s] for net in nets] for s in STATISTICS}
    return results


def paper(depths: list[int]) -> dict:
    """Balduzzi et al.'s correlation at depth L: 2^-L for plain nets (Thm. 1), 1/sqrt(L) for resnets with BN
    (Thm. 3, under its assumption that the gradient's variance grows linearly in L)."""
    return {"plain": [2.0**-d for d in depths], "residual": [d**-0.5 for d in depths]}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std over seeds (std 0 for one seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def loglog_slope(depths: list[int], values: list[float]) -> float:
    """Least-squares slope k of log(value) on log(depth), the exponent of a power law value ~ c L^k; only the
    finite positive values count. NaN where fewer than two distinct depths are left."""
    kept = [(math.log(d), math.log(v)) for d, v in zip(depths, values) if math.isfinite(v) and v > 0]
    if len({x for x, _ in kept}) < 2:
        return math.nan
    return statistics.linear_regression(*zip(*kept)).slope


def slopes(results: dict) -> dict:
    """The fitted power-law exponents of the mean over seeds against depth, per family:
    {"slope/<family>": of the correlation, "gradient_moment_slope/<family>": of the gradient moment}."""
    fits = {}
    for key, statistic in (("slope", "correlation"), ("gradient_moment_slope", "gradient_moment")):
        for family in FAMILIES:
            depths = sorted(results[family])
            means = [statistics.fmean(results[family][d][statistic]) for d in depths]
            fits[f"{key}/{family}"] = loglog_slope(depths, means)
    return fits


def panel(ax, results: dict, statistic: str, colours: dict, labels: dict) -> list[float]:
    """One statistic vs depth, mean +- std over seeds, per family; depth on a log2 axis. Returns the means."""
    drawn = []
    for family, colour in colours.items():
        depths = sorted(results[family])
        means, stds = zip(*(mean_std(results[family][d][statistic]) for d in depths))
        ax.errorbar(depths, means, yerr=stds, marker="o", capsize=3, color=colour, label=labels[family])
        drawn += means
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("depth L (fully connected layers, log2 scale)")
    ax.grid(alpha=0.3)
    return drawn


def number(value: float) -> str:
    """A fitted exponent for a label; n/a where there was nothing to fit."""
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def correlation_panel(ax, results: dict, colours: dict) -> None:
    """The paper's statistic on log-log axes, where power laws are straight lines, with the fitted exponents and
    the theorems' curves (labelled with Theorem 3's assumption and this toy's measured gradient growth)."""
    fits = slopes(results)
    labels = {f: f"{f} + BN (measured slope {number(fits[f'slope/{f}'])})" for f in FAMILIES}
    means = panel(ax, results, "correlation", colours, labels)
    depths = sorted(results["plain"])
    curves = paper(depths)
    moment = fits["gradient_moment_slope/residual"]
    here = rf"here $\propto L^{{{moment:.2f}}}$" if math.isfinite(moment) else "here not fitted"
    ax.plot(depths, curves["plain"], ":", color=colours["plain"], label="$2^{-L}$ (Thm. 1, plain)")
    thm3 = rf"$1/\sqrt{{L}}$ (Thm. 3, assumes $E[(dy/dx)^2] \propto L$; {here})"
    ax.plot(depths, curves["residual"], ":", color=colours["residual"], label=thm3)
    ax.set_yscale("log")
    positive = [m for m in means if math.isfinite(m) and m > 0]
    if positive:  # 2^-L may leave at the bottom rather than squash the measured values; above 1 (a correlation's
        ax.set_ylim(min(positive) / 2, 10)  # most) is the legend's room
    ax.legend(fontsize=8, loc="upper right")
    ax.set_ylabel("correlation of dy/dx at distinct inputs\n(mean over pairs, over random readout; log scale)")
    ax.set_title("Correlation between gradients at distinct inputs (log-log)")


def figure(results: dict):
    """Left: the paper's statistic, log-log, with 2^-L and 1/sqrt(L); right: lag-1 autocorrelation, no theory."""
    import matplotlib.pyplot as plt  # lazy: the measures (and their tests) need no matplotlib

    colours = {"plain": plots.STYLE["plain_bn"][0], "residual": plots.STYLE["residual_bn"][0]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    correlation_panel(left, results, colours)
    panel(right, results, "lag1", colours, {f: f"{f} + BN (measured)" for f in FAMILIES})
    right.axhline(0, color="grey", lw=0.5)
    right.set_ylabel("lag-1 autocorrelation of dy/dx along the line")
    right.set_title("Neighbouring points only (no theory curve)")
    right.legend(fontsize=8)
    fig.suptitle("Shattered gradients, Balduzzi et al. 2017 toy setting (mean ± std over seeds)")
    return fig


def plot(results: dict, path: Path) -> None:
    """Draw `figure` and write it to `path`."""
    plots.save(figure(results), path)


def toy(cfg: Toy, out: str | Path) -> dict:
    """Run the toy experiment; write toy.json ({family: {depth: {statistic: [per seed]}}} and the fitted exponents
    of `slopes`, null where nothing could be fitted) and the figure. Returns `run`'s results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(cfg)
    fits = {k: v if math.isfinite(v) else None for k, v in slopes(results).items()}
    write_json(out / "toy.json", {**{f: {str(d): v for d, v in r.items()} for f, r in results.items()}, **fits})
    plot(results, out / "toy_shattering.png")
    return results
