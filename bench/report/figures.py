"""The report's figures: error vs iteration (He et al. 2016, Fig. 6 layout) and error or gap vs depth.

Depth axes are log2 (the grid's depths roughly double); error axes fit the data, logarithmic (symlog, linear
below 1 %, where an error is 0), so CIFAR's 5-10 % final errors are not squashed under a 0-100 % axis. A
diverged run is an x at the top of its panel, never a point at 0.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

from bench.plots import depth_axis, depth_colours, style
from bench.record import GAP, TEST_ERROR, TRAIN_ERROR, Run

ERROR_TICKS = (0, 0.5, 1, 2, 5, 10, 20, 50, 100)  # %
FINE_TICKS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30, 40, 50, 60, 80, 100)


def error_axis(ax, values: list[float]) -> None:
    """Error axis (%) fitted to `values`: logarithmic where every value is above 0.5 % (CIFAR's 5-10 % final errors
    fill the panel), else symlog from 0 (linear below 1 %), so that an error of exactly 0 is still drawn."""
    values = [v for v in values if math.isfinite(v)] or [100.0]
    lo, hi = min(values), min(100.0, 1.25 * max(values)) or 1.0
    if lo > 0.5:
        lo = lo / 1.25
        ax.set_yscale("log")
    else:
        lo = 0
        ax.set_yscale("symlog", linthresh=1, linscale=0.5)
    ax.set_ylim(lo, hi)
    ticks = [t for t in ERROR_TICKS if lo <= t <= hi]
    if len(ticks) < 4:  # a narrow range: finer ticks
        ticks = [t for t in FINE_TICKS if lo <= t <= hi]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())


def chance_line(ax, chance: float | None) -> None:
    """A dotted line at chance error (%), where it is known and inside the axis."""
    if chance is not None and 100 * chance <= ax.get_ylim()[1]:
        ax.axhline(100 * chance, color="grey", ls=":", lw=1.5, label=f"chance ({100 * chance:.0f} %)")


def mark_top(ax, xs: list, colour, label: str | None = None) -> None:
    """An x at the top edge of the axes at each x: a diverged run has no error to draw."""
    if xs:
        ax.plot(
            xs,
            [1.0] * len(xs),
            "x",
            ms=12,
            mew=3,
            color=colour,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=label,
        )


def plot_convergence(results: list[Run], variants: list[str], chance: float | None):
    """He et al. Fig. 6: error vs iteration, one panel per variant, filled column by column in two rows (plain |
    residual, without | with BN for the four switches); one colour per depth, thin dashed = training error,
    bold = test error, of the first seed. A diverged run ends in an x at its step."""
    colours = depth_colours(sorted({r.cell.depth for r in results}))
    rows = 2 if len(variants) > 2 else 1
    cols = math.ceil(len(variants) / rows)
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(11, 5.5 * cols), 4 * rows), sharex=True, sharey=True, squeeze=False
    )
    first = {}  # the first seed: curves of one run, not an average that hides divergence
    for r in sorted(results, key=lambda r: r.cell.seed):
        first.setdefault((r.cell.variant, r.cell.depth), r)
    every = [100 * e for r in first.values() for k in (TRAIN_ERROR, TEST_ERROR) for e in r.history[k]]
    for i, v in enumerate(variants):
        ax = axes[i % rows, i // rows]
        ax.set_title(style(v)[1])
        for d, colour in colours.items():
            if (v, d) in first:
                convergence_curves(ax, first[v, d], colour)
        error_axis(ax, every)
        chance_line(ax, chance)
        ax.set_xlabel("iteration")
        if i < rows:  # the first column: the rows share their y axis
            ax.set_ylabel("error (%, log scale)  dashed: training, bold: test")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for i in range(len(variants), rows * cols):
        axes[i % rows, i // rows].set_visible(False)
    fig.suptitle("Training and test error vs iteration (He et al. 2016, Fig. 6 layout; first seed)")
    return fig


def convergence_curves(ax, run: Run, colour) -> None:
    """One run's training (dashed) and test (bold) error vs iteration; an x at the step where it diverged."""
    m, h = run.metrics, run.history
    label = f"depth {m.depth}" + (f" (diverged at step {m.diverged_step})" if m.diverged else "")
    ax.plot(h["step"], [100 * e for e in h[TRAIN_ERROR]], "--", lw=1, color=colour)
    ax.plot(h["step"], [100 * e for e in h[TEST_ERROR]], "-", lw=2, color=colour, label=label)
    mark_top(ax, [m.diverged_step] if m.diverged else [], colour)


def annotate_lost_seeds(ax, agg: dict, v: str, depths: list[int], key: str, colour) -> None:
    """ "k/n div." beside a mean over the seeds that survived: it looks as healthy as one over all of them."""
    for d in depths:
        a = agg.get((v, d))
        if a and a[key]["n"] and a["diverged"]:
            ax.annotate(
                f"{a['diverged']}/{a['seeds']} div.",
                (d, 100 * a[key]["mean"]),
                fontsize=7,
                color=colour,
                textcoords="offset points",
                xytext=(5, -10),
            )


def ring_at_chance(ax, agg: dict, v: str, depths: list[int], colour, label: str | None) -> bool:
    """Ring in black each gap of a cell with seeds at chance; a cell wholly at chance is a hollow point, not joined
    to the variant's line. Whether anything was ringed."""
    cells = [(d, agg[v, d]) for d in depths if (v, d) in agg and agg[v, d][GAP]["n"] and agg[v, d]["at_chance"]]
    untrained = [(d, 100 * a[GAP]["mean"]) for d, a in cells if a["at_chance"] == a[GAP]["n"]]
    ax.plot([d for d, _ in untrained], [y for _, y in untrained], "o", mfc="none", color=colour)
    ax.plot(
        [d for d, _ in cells],
        [100 * a[GAP]["mean"] for _, a in cells],
        "s",
        ms=13,
        mfc="none",
        mec="black",
        mew=1.5,
        label=label if cells else None,
    )
    return bool(cells)


def plot_vs_depth(
    agg: dict,
    variants: list[str],
    depths: list[int],
    panels: list[tuple[str, str]],
    title: str,
    chance: float | None = None,
):
    """One panel per metric: mean +- std over the non-diverged seeds vs depth, one line per variant; x at the top:
    every seed diverged; "k/n div." beside a mean that lost seeds. On the gap panel a black square rings a cell at
    chance: its near-zero gap is a net that learnt nothing, not one that generalises."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        extent, ringed = [], False
        for v in variants:
            colour, name = style(v)
            pts = [agg[v, d] | {"depth": d} for d in depths if (v, d) in agg and agg[v, d][key]["n"]]
            if key == GAP:  # a gap of a cell wholly at chance is not part of the variant's trend
                pts = [a for a in pts if a["at_chance"] < a[key]["n"]]
            ys, errs = [100 * a[key]["mean"] for a in pts], [100 * (a[key]["std"] or 0) for a in pts]
            line = ax.errorbar(
                [a["depth"] for a in pts], ys, yerr=errs, marker="o", capsize=3, color=colour, label=name
            )
            colour = line[0].get_color()
            extent += [y + e for y, e in zip(ys, errs)] + [y - e for y, e in zip(ys, errs)]
            annotate_lost_seeds(ax, agg, v, depths, key, colour)
            if key == GAP:
                legend = None if ringed else "at chance / untrained"
                ringed = ring_at_chance(ax, agg, v, depths, colour, legend) or ringed
            mark_top(
                ax,
                [d for d in depths if (v, d) in agg and not agg[v, d][key]["n"] and agg[v, d]["diverged"]],
                colour,
                f"{name}: diverged",
            )
        depth_axis(ax, depths)
        if key == GAP:
            ax.axhline(0, color="grey", lw=1)
        else:
            error_axis(ax, extent)
            chance_line(ax, chance)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig
