"""Signal propagation, branches near zero and BN as a linear map, in the report (bench/diagnostics/propagation.py
and batchnorm.py measure them in every cell): the figures, the section's sentences and the claims, all computed."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.plots import style
from bench.record import Run
from bench.report.contrast import difference_interval, mean_interval
from bench.report.grid import by_cell
from bench.report.pathology_figures import per_layer
from bench.report.stats import summarise
from bench.report.verdict import Grid, claim, decide

MEASURES = (  # diagnostics.json key, axis label (Brock et al. 2021, Fig. 1)
    ("spp_squared_mean", "channel-averaged squared mean"),
    ("spp_variance", "average channel variance"),
    ("spp_branch_variance", "residual branch: average channel variance"),
)
FIGURES = ("signal_propagation.png", "branch_ratio.png")


def figures(results: list[Run], variants: list[str], depths: list[int]) -> dict[str, Figure]:
    deep = max(depths)
    return {FIGURES[0]: plot_signals(results, variants, deep), FIGURES[1]: plot_branch_ratio(results, variants, deep)}


def plot_signals(results: list[Run], variants: list[str], depth: int) -> Figure:
    """Brock et al.'s signal propagation plot: each measure against the block, one line per variant, dashed at
    initialisation and solid after training (the first seed that has both), on log axes."""
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4.4 * len(MEASURES), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], MEASURES):
        for when, line in (("init", "--"), ("end", "-")):
            data = per_layer(results, when, key)
            for v in variants:
                if (v, depth) in data:
                    colour, name = style(v)
                    ys = [y if y and y > 0 else math.nan for y in data[v, depth]]
                    ax.plot(range(1, len(ys) + 1), ys, line, color=colour, label=f"{name}, {when}")
        ax.set_yscale("log")
        ax.set_xlabel("block")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle(f"Signal propagation at depth {depth} (dashed: initialisation; solid: trained)")
    return fig


def plot_branch_ratio(results: list[Run], variants: list[str], depth: int) -> Figure:
    """||f(x)|| / ||shortcut(x)|| per block of the nets with a skip, at initialisation and after training."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for when, line in (("init", "--"), ("end", "-")):
        data = per_layer(results, when, "branch_ratio_per_block")
        for v in variants:
            ys = data.get((v, depth))
            if ys and any(y == y for y in ys):  # a plain net has no skip: all NaN
                colour, name = style(v)
                ax.plot(
                    range(1, len(ys) + 1),
                    [y if y > 0 else math.nan for y in ys],
                    line,
                    color=colour,
                    label=f"{name}, {when}",
                )
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("||f(x)|| / ||shortcut(x)||")
    ax.set_title(f"Residual branches against the stream at depth {depth} (below 1: near zero)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return fig


def seeds(results: list[Run], key: str, v: str, d: int) -> list[float]:
    return [x for r in by_cell(results).get((v, d), []) if (x := r.metrics.scalars.get(key)) is not None]


def growth_text(results: list[Run], variants: list[str], deep: int) -> str:
    """One clause per variant: its stream's variance growth per block at initialisation, mean over seeds."""
    parts = []
    for v in variants:
        s = summarise(seeds(results, "init/spp_growth", v, deep))
        if s["n"]:
            parts.append(f"{v} x{s['mean']:.2f}")
    return ", ".join(parts)


def fold_text(results: list[Run]) -> str:
    """The largest BN-folding difference over every BN cell and moment, or why there is none."""
    diffs = [
        (x, r.cell.name)
        for r in results
        for when in ("init", "end")
        if (x := r.metrics.scalars.get(f"{when}/bn_fold_difference")) is not None
    ]
    if not diffs:
        return "No cell has BN, so nothing was folded."
    worst, where = max(diffs)
    return (
        f"In eval mode BN is a linear map: folded into the conv before it (torch's `fuse_conv_bn_eval`), every BN "
        f"net gives the same logits, the largest difference being {worst:.1e} of the largest logit ({where}, over "
        f"{len(diffs)} measurements, float32)."
    )


def section(results: list[Run], variants: list[str], depths: list[int]) -> str:
    deep = max(depths)
    return f"""### Signal propagation, branches near zero, BN as a linear map

`bench/diagnostics/propagation.py`, after Brock, De and Smith 2021 (Fig. 1): at each block's output, the
channel-averaged squared mean, the average channel variance, and the residual branch's average channel variance,
on the probe. At initialisation, at depth {deep}, the stream's variance grows per block (geometric mean over the
blocks that keep their shape, mean over seeds): {growth_text(results, variants, deep) or "no cell measured it"}.
Without BN a residual stream multiplies its variance at every block; BN makes the growth additive (about one
unit of variance per block); branches that start at zero (Fixup) keep it flat.
The branch ratio ||f(x)|| / ||shortcut(x)|| measures "the block learns a residual close to 0" (He et al. 2016,
Fig. 7 makes the point with response stds). {fold_text(results)}

![signal propagation](figures/{FIGURES[0]})

![branch ratio](figures/{FIGURES[1]})
"""


def claims(g: Grid, deep: int) -> list[dict]:
    """What the signal propagation shows, as claims over seeds."""
    cells = [f"residual-{deep}", f"residual_bn-{deep}"]
    c = claim(
        "propagation/bn",
        "variance growth without BN",
        f"at depth {deep} at initialisation, BN slows the residual stream's variance growth per block "
        f"(residual_bn's growth below residual's)",
        cells,
        "difference of means over seeds of log10 growth, Welch's t",
        "log10",
    )
    absent = [f"{v}-{deep}" for v in ("residual", "residual_bn") if (v, deep) not in g.runs]
    why = (
        f"{absent[0]} is not in the grid" if absent else None
    )  # measured at initialisation: divergence later is no bar
    a, b = (g.scalar("init/spp_growth", v, deep, log=True) for v in ("residual", "residual_bn"))
    out = [decide(c, None if why else difference_interval(a, b), g.n(("residual", deep), ("residual_bn", deep)), why)]
    c = claim(
        "branches/near_zero",
        "residual connections",
        f"at depth {deep}, residual_bn's trained branches are smaller against the stream than at initialisation "
        f"(mean ||f(x)|| / ||shortcut(x)|| falls)",
        [f"residual_bn-{deep}"],
        "mean over seeds of log10(end / init), t with n - 1 df (paired by seed)",
        "log10",
    )
    why = g.missing(("residual_bn", deep))
    pairs = [
        (r.metrics.scalars.get("end/branch_ratio"), r.metrics.scalars.get("init/branch_ratio"))
        for r in g.runs.get(("residual_bn", deep), [])
    ]
    logs = [math.log10(e / i) for e, i in pairs if e and i]
    out.append(decide(c, None if why else mean_interval(logs), g.n(("residual_bn", deep)), why, sign=-1))
    return out
