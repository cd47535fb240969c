"""The path-length figure (Veit et al. 2016, Fig. 6): against the path length k, (a) the number of paths C(n, k),
(b) the gradient norm of one path of length k, (c) their product, the total gradient that paths of length k carry,
with the band that holds most of it shaded. A column per variant, a line per depth, the first seed drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from bench.config import Params
from bench.plots import depth_colours, save, style

PANELS = (("paths", "number of paths C(n, k)"), ("per_path", "gradient norm per path"), ("total", "total gradient"))


def plot(summary: dict, params: Params, path: Path) -> None:
    measured = [r for r in summary["cells"].values() if not r["diverged"]]
    variants = [v for v in params.paths.variants if any(r["variant"] == v for r in measured)]
    if not variants:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        why = "; ".join(summary["not_measured"]) or "every cell diverged"
        ax.text(0.5, 0.5, f"no cell measured: {why}", ha="center", va="center", fontsize=8)
        ax.set_axis_off()
        save(fig, path)
        return
    seed = min(r["seed"] for r in measured)
    colours = depth_colours(params.grid.depths)
    fig, axes = plt.subplots(len(PANELS), len(variants), figsize=(4.2 * len(variants), 8), squeeze=False)
    for col, v in enumerate(variants):
        for r in (r for r in measured if r["variant"] == v and r["seed"] == seed):
            for row, (key, label) in enumerate(PANELS):
                ax = axes[row][col]
                ax.plot(r["k"], r[key], marker=".", color=colours[r["depth"]], label=f"depth {r['depth']}")
                ax.set_yscale("log")
                ax.set_ylabel(label, fontsize=8)
            low, high = r["band"]
            axes[2][col].axvspan(low, high, color=colours[r["depth"]], alpha=0.12)
        axes[0][col].set_title(f"{style(v)[1]}, seed {seed}", fontsize=9)
        axes[-1][col].set_xlabel("path length k (residual branches passed)")
        axes[0][col].legend(fontsize=7)
    diverged = sorted(n for n, r in summary["cells"].items() if r["diverged"])
    p = summary["params"]
    fig.suptitle(
        f"Gradient by path length (Veit et al. 2016, Fig. 6): {p['subset']} training images, eval mode,\n"
        f"{p['samples']} random sets of blocks per k; shaded: the central {p['mass']:.0%} of the total; "
        f"a path of zero gradient is not drawn (log scale)"
        + (f"\ndiverged, not measured: {', '.join(diverged)}" if diverged else ""),
        fontsize=9,
    )
    save(fig, path)
