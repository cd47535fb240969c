"""The landscape figure: per cell, the 1-D plot beside the 2-D contour plot (Li et al. 2018, Fig. 5), a row per
variant and a pair of panels per depth, for the first seed of landscape.seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bench.config import Params
from bench.plots import save, style
from bench.record import Cell

LEVELS = np.arange(0.1, 10, 0.5)  # contour levels of the loss: the official code's vmin, vmax and vlevel


def plot(summary: dict, params: Params, path: Path) -> None:
    ls, depths = params.landscape, params.grid.depths
    drawn = {r["variant"] for r in summary["cells"].values()}
    variants = [v for v in ls.variants if v in drawn]
    if not variants:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no cell drawn: " + "; ".join(summary["not_drawn"]), ha="center", va="center", fontsize=8)
        ax.set_axis_off()
        save(fig, path)
        return
    seed = min(s for s in ls.seeds if any(r["seed"] == s for r in summary["cells"].values()))
    fig, axes = plt.subplots(
        len(variants), 2 * len(depths), figsize=(2.6 * 2 * len(depths), 2.6 * len(variants)), squeeze=False
    )
    for row, v in enumerate(variants):
        for col, d in enumerate(depths):
            name = Cell(v, d, seed).name
            r = summary["cells"].get(name, {})
            one, two = axes[row][2 * col], axes[row][2 * col + 1]
            title = f"{style(v)[1]}, depth {d}"
            if r.get("diverged", True):
                for ax in (one, two):
                    ax.text(0.5, 0.5, "diverged: no weights", ha="center", va="center", transform=ax.transAxes)
                    ax.set_axis_off()
                one.set_title(title, fontsize=8)
                continue
            coords = np.array(r["coordinates"])
            losses = np.array([np.nan if x is None else x for x in r["loss_1d"]])
            one.plot(coords, losses, color=style(v)[0] or "black")
            one.set_yscale("log")
            one.set_xlabel("alpha", fontsize=7)
            one.set_title(f"{title}: 1-D", fontsize=8)
            grid = np.array([[np.nan if x is None else x for x in row_] for row_ in r["loss_2d"]])
            two.contour(coords, coords, grid, levels=LEVELS, cmap="viridis", linewidths=0.7)
            two.set_aspect("equal")
            fraction = r["nonconvex_fraction"]
            shown = "n/a" if fraction is None else f"{fraction:.2f}"
            two.set_title(f"2-D, non-convex {shown}", fontsize=8)
            for ax in (one, two):
                ax.tick_params(labelsize=6)
    fig.suptitle(
        f"Loss along filter-normalised directions (Li et al. 2018), seed {seed}, {ls.subset} training images, "
        f"BN in eval mode\nnon-convex: share of the plane's points with lambda_min < "
        f"-{summary['params']['ratio']} |lambda_max|",
        fontsize=9,
    )
    save(fig, path)
