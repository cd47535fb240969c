"""The curvature figure: lambda_max and the trace of the training loss's Hessian against depth, a line per variant,
at initialisation (dashed, open markers) and at the end (solid); each seed a dot, the line through their mean. A
diverged cell has no end point: it is named under the plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bench.config import Params
from bench.plots import depth_axis, save, style

MEASURES = (("lambda_max", "largest eigenvalue lambda_max"), ("trace", "trace (Hutchinson)"))


def values(summary: dict, variant: str, depth: int, when: str, key: str) -> list[float]:
    """The measure of each seed of a cell at `when` (init or end); a diverged seed has no end, a blown-up one None."""
    found = []
    for r in summary["cells"].values():
        if (r["variant"], r["depth"]) == (variant, depth) and (x := r.get(when, {}).get(key)) is not None:
            found.append(x)
    return found


def plot(summary: dict, params: Params, path: Path) -> None:
    depths = params.grid.depths
    variants = [v for v in params.curvature.variants if any(r["variant"] == v for r in summary["cells"].values())]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, MEASURES):
        for v in variants:
            colour, name = style(v)
            for when, line, face, moment in (("init", "--", "none", "initialisation"), ("end", "-", colour, "end")):
                points = [(d, values(summary, v, d, when, key)) for d in depths]
                points = [(d, xs) for d, xs in points if xs]
                for d, xs in points:
                    ax.scatter([d] * len(xs), xs, s=12, color=colour, facecolors=face, alpha=0.6)
                if points:
                    ds, means = zip(*[(d, float(np.mean(xs))) for d, xs in points])
                    ax.plot(ds, means, line, color=colour, label=f"{name}, {moment}")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylabel(label)
        ax.set_title(f"{label} of the training loss", fontsize=9)
        depth_axis(ax, depths)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    diverged = sorted(n for n, r in summary["cells"].items() if r["diverged"])
    p = summary["params"]
    fig.suptitle(
        f"Curvature of the training loss (Yao et al. 2020): {p['subset']} training images, BN in eval mode; "
        f"trace from {p['samples']} Rademacher vectors"
        + (f"\ndiverged, no end point: {', '.join(diverged)}" if diverged else ""),
        fontsize=9,
    )
    save(fig, path)
