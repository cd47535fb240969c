"""The figures of the report's diagnostics section: gradient correlation (shattering) vs depth, the backward
signal and relative weight gradient per block at initialisation, the response std of every 3x3 layer (He et al.
Fig. 7), and lesions (Veit et al. 2016).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.plots import depth_axis, depth_colours, style
from bench.record import Metrics, Run
from bench.report.grid import by_cell
from bench.report.stats import summarise


def figures(results: list[Run], variants: list[str], depths: list[int]) -> dict[str, Figure]:
    """The section's figures by file name."""
    return {
        "shattering_vs_depth.png": plot_shattering([r.metrics for r in results], variants, depths),
        "grad_rms_per_block.png": plot_per_block(
            results,
            variants,
            "activation_grad_rms",
            "RMS of d loss / d block output",
            "Backward signal per block at initialisation (falls towards the input: vanishing; rises: exploding)",
        ),
        "relative_grad_per_block.png": plot_per_block(
            results,
            variants,
            "relative_weight_grad",
            "||d loss / d W|| / ||W||",
            "Relative weight gradient per block at initialisation",
        ),
        "response_std.png": plot_response(results, variants),
        "lesion.png": plot_lesions(results, variants),
    }


def per_layer(results: list[Run], when: str, key: str) -> dict[tuple[str, int], list[float]]:
    """{(variant, depth): per-block or per-layer list} of the first seed that measured it; NaN where a value
    was not finite."""
    out = {}
    for cell, rs in by_cell(results).items():
        measured = [values for r in rs if (values := r.diagnostics.get(when, {}).get(key))]
        if measured:  # a diverged seed has no "end"
            out[cell] = [x if x is not None else math.nan for x in measured[0]]
    return out


def plot_per_block(results: list[Run], variants: list[str], key: str, ylabel: str, title: str) -> Figure:
    """One panel per variant, one line per depth: a per-block diagnostic at initialisation against the block's
    index, on a log axis."""
    data = per_layer(results, "init", key)
    colours = depth_colours(sorted({d for _, d in data}))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.6), sharey=True, squeeze=False)
    for ax, v in zip(axes[0], variants):
        for d, colour in colours.items():
            if (v, d) in data:
                ys = data[v, d]
                ax.plot(range(1, len(ys) + 1), ys, marker=".", color=colour, label=f"depth {d}")
        ax.set_title(style(v)[1])
        ax.set_xlabel("block")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return fig


def plot_response(results: list[Run], variants: list[str]) -> Figure:
    """He et al. 2016 Fig. 7: the std of every 3x3 layer's response after training, by layer (top) and
    sorted by magnitude (bottom); one colour per variant, one line style per depth."""
    data = per_layer(results, "end", "response_std")
    depths = sorted({d for _, d in data})
    styles = dict(zip(depths, ["-", "--", ":", "-."] * len(depths)))
    fig, axes = plt.subplots(2, 1, figsize=(9, 7))
    for (v, d), ys in sorted(data.items(), key=lambda kv: (kv[0][1], variants.index(kv[0][0]))):
        colour, name = style(v)
        axes[0].plot(range(1, len(ys) + 1), ys, styles[d], color=colour, label=f"{name}-{d}")
        axes[1].plot(range(1, len(ys) + 1), sorted(ys, reverse=True), styles[d], color=colour)
    for ax, xlabel in zip(axes, ("layer index (3x3 convs, input to output)", "layer index (sorted by magnitude)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("std of the response")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=3)
    fig.suptitle("Response std of every 3x3 layer after training, after BN and before ReLU or + (He et al. Fig. 7)")
    return fig


def plot_lesions(results: list[Run], variants: list[str]) -> Figure:
    """Veit et al. 2016: the probe error with one block deleted, against the intact error (dashed), at the
    deepest depth, of each variant's first seed that did not diverge; downsampling blocks as crosses; a net at
    chance is labelled untrained."""
    depth = max(r.cell.depth for r in results)
    groups = by_cell(results)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for v in variants:
        trained = [r for r in groups.get((v, depth), []) if not r.metrics.diverged]
        if trained:
            lesion_curve(ax, trained[0].diagnostics["end"], *style(v))
    ax.set_xlabel(f"deleted block (depth {depth}; x: downsampling block)")
    ax.set_ylabel("probe error with the block deleted (%)")
    ax.set_title("Lesion study (Veit et al. 2016); dashed: the intact net's error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def lesion_curve(ax, end: dict, colour, name: str) -> None:
    """One net's error with each block deleted; its downsampling blocks crossed; its intact error dashed."""
    xs = range(1, len(end["lesion_error"]) + 1)
    errs = [100 * e if e is not None else math.nan for e in end["lesion_error"]]
    label = name + (" (at chance: untrained)" if end["lesion_at_chance"] else "")
    ax.plot(xs, errs, marker=".", color=colour, label=label)
    down = [(x, e) for x, e, is_down in zip(xs, errs, end["lesion_downsampling"]) if is_down]
    ax.plot([x for x, _ in down], [e for _, e in down], "x", ms=9, mew=2, color=colour)
    ax.axhline(100 * end["intact_error"], ls="--", lw=1, color=colour)


def plot_shattering(results: list[Metrics], variants: list[str], depths: list[int]) -> Figure:
    """Mean correlation between input gradients at distinct points of image-to-image paths vs depth, at init
    and after training: mean ± std over seeds (each seed's value is itself a mean over image pairs)."""
    groups = by_cell(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, when in zip(axes, ("init", "end")):
        for v in variants:
            pts = []
            for d in depths:
                s = summarise([m.scalars.get(f"{when}/shattering") for m in groups.get((v, d), [])])
                if s["n"]:
                    pts.append((d, s["mean"], s["std"] or 0))
            colour, name = style(v)
            xs, ys, errs = ([p[i] for p in pts] for i in range(3))
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colour, label=name)
        ax.set_title("at initialisation" if when == "init" else "after training")
        depth_axis(ax, depths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("correlation of d logit / d input\nbetween distinct points of a path")
    fig.suptitle("Shattered gradients (Balduzzi et al. 2017) between two probe images")
    return fig
