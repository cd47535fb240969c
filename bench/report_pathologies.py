"""The report's diagnostics section: why plain deep nets fail, measured per cell (bench.diagnostics).

Figures: gradient correlation (shattering) vs depth, per-block gradient norms at initialisation,
per-block response std (He et al. Fig. 7), lesion curves (Veit et al. 2016), the learning-rate sweep,
and a table of the scalar diagnostics.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench.plots import STYLE, save
from bench.record import DIVERGED, DIVERGED_STEP, TRAIN_ERROR, Cell

DIAGNOSTIC_COLUMNS = (  # (metrics.json key, header, as %)
    ("init/shattering", "gradient correlation at init", False),
    ("end/shattering", "gradient correlation at end", False),
    ("init/grad_ratio", "grad norm first/last block at init", False),
    ("init/variance_growth", "forward variance growth per block at init", False),
    ("end/lesion_mean_increase", "lesion: mean error increase", True),
    ("end/lesion_max_increase", "lesion: max error increase", True),
    ("end/bn_train_mode_error", "error, BN train mode", True),
    ("end/bn_eval_mode_error", "error, BN eval mode", True),
)


def _fmt(v, percent: bool) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.1f}" if percent else (f"{v:.3g}")


def diagnostics_table(results: list[dict]) -> str:
    """One row per cell (first seed of each variant x depth), the scalar diagnostics as columns."""
    firsts = {}
    for m in sorted(results, key=lambda m: m["seed"]):
        firsts.setdefault((m["variant"], m["depth"]), m)
    head = ["cell", *(h + (" (%)" if pct else "") for _, h, pct in DIAGNOSTIC_COLUMNS)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (v, d), m in sorted(firsts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        name = Cell(v, d, m["seed"]).name + (" (diverged)" if m[DIVERGED] else "")
        rows.append("| " + " | ".join([name, *(_fmt(m.get(k), pct) for k, _, pct in DIAGNOSTIC_COLUMNS)]) + " |")
    return "\n".join(rows)


def _per_block(runs: Path, results: list[dict], when: str, key: str) -> dict:
    """{(variant, depth): per-block list} of the first seed, where measured."""
    out = {}
    for m in sorted(results, key=lambda m: m["seed"]):
        path = runs / Cell(m["variant"], m["depth"], m["seed"]).name / "diagnostics.json"
        if (m["variant"], m["depth"]) in out or not path.exists():
            continue
        d = json.loads(path.read_text())
        if when in d:
            out[m["variant"], m["depth"]] = d[when][key]
    return out


def plot_per_block(runs: Path, results: list[dict], variants: list[str], when: str, key: str, ylabel: str,
                   title: str, path: Path, log: bool = False) -> None:
    """One panel per variant, one line per depth: a per-block diagnostic against the block index."""
    import matplotlib.pyplot as plt

    data = _per_block(runs, results, when, key)
    depths = sorted({d for _, d in data})
    colours = plt.cm.viridis([i / max(1, len(depths) - 1) for i in range(len(depths))])
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.8), sharey=True, squeeze=False)
    for ax, v in zip(axes[0], variants):
        for colour, d in zip(colours, depths):
            ys = data.get((v, d))
            if ys:
                ax.plot(range(1, len(ys) + 1), [y if y is not None else math.nan for y in ys], marker=".",
                        color=colour, label=f"depth {d}")
        ax.set_title(v)
        ax.set_xlabel("block")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    save(fig, path)


def plot_shattering(results: list[dict], variants: list[str], depths: list[int], path: Path) -> None:
    """Lag-1 correlation of input gradients along an image-to-image path vs depth, at init and at the end."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, when in zip(axes, ("init", "end")):
        for v in variants:
            pts = [(m["depth"], m.get(f"{when}/shattering")) for m in results if m["variant"] == v and m["seed"] ==
                   min(r["seed"] for r in results)]
            pts = sorted((d, s) for d, s in pts if s is not None)
            ax.plot([d for d, _ in pts], [s for _, s in pts], marker="o", color=STYLE[v][0], label=STYLE[v][1])
        ax.set_title("at initialisation" if when == "init" else "after training")
        ax.set_xlabel("depth")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient correlation (lag 1)")
    fig.suptitle("Shattered gradients: correlation of d logit / d input along a path between two images")
    save(fig, path)


def plot_lr_sweep(summary: dict, path: Path) -> None:
    """Final training error vs learning rate per variant; x = diverged."""
    import matplotlib.pyplot as plt

    runs = summary["runs"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for v in dict.fromkeys(r["variant"] for r in runs):
        rs = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["lr"])
        ok = [r for r in rs if not r[DIVERGED]]
        colour, name = STYLE[v]
        ax.plot([r["lr"] for r in ok], [100 * r[TRAIN_ERROR] for r in ok], marker="o", color=colour, label=name)
        dead = [r["lr"] for r in rs if r[DIVERGED]]
        if dead:
            ax.plot(dead, [100] * len(dead), "x", ms=12, mew=3, color=colour, label=f"{name}: diverged")
    ax.set_xscale("log")
    ax.set_ylim(0, 105)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final training error (%)")
    ax.set_title(f"Learning-rate sensitivity at depth {runs[0]['depth']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def lr_table(summary: dict) -> str:
    runs = summary["runs"]
    lrs = sorted({r["lr"] for r in runs})
    rows = ["| variant | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|" + "---|" * (len(lrs) + 1)]
    for v in dict.fromkeys(r["variant"] for r in runs):
        by_lr = {r["lr"]: r for r in runs if r["variant"] == v}
        cells = [f"diverged at step {by_lr[lr][DIVERGED_STEP]}" if by_lr[lr][DIVERGED]
                 else f"{100 * by_lr[lr][TRAIN_ERROR]:.1f}" for lr in lrs]
        rows.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def section(runs: Path, results: list[dict], variants: list[str], depths: list[int], figures: Path,
            lr_summary: Path | None, toy_dir: Path | None) -> str:
    """Write the figures; return the Markdown section that embeds them."""
    plot_shattering(results, variants, depths, figures / "shattering_vs_depth.png")
    plot_per_block(runs, results, variants, "init", "weight_grad_norm", "||d loss / d block weights||",
                   "Gradient norm per block at initialisation (vanishing < , exploding > )",
                   figures / "grad_norm_per_block.png", log=True)
    plot_per_block(runs, results, variants, "end", "response_std", "std of f(x) (after BN, before +)",
                   "Response std per block after training (He et al. 2016, Fig. 7)", figures / "response_std.png")
    plot_per_block(runs, results, variants, "end", "lesion_error", "test error with the block deleted",
                   "Lesion study: delete one block at test time (Veit et al. 2016)", figures / "lesion.png")
    md = f"""## Diagnostics of the pathologies

Measured by `bench/diagnostics.py` on a fixed probe batch of test images, at initialisation (BN
calibrated on the probe) and after training; the first seed of each cell. Diverged cells have no
end-of-training diagnostics.

{diagnostics_table(results)}

![shattering](figures/shattering_vs_depth.png)

Shattered gradients (Balduzzi et al. 2017): the correlation between input gradients at neighbouring
points of a path between two probe images. 1 = smooth, 0 = white noise.

![gradient norms](figures/grad_norm_per_block.png)

Per-block gradient norm of the loss w.r.t. the block's weights at initialisation (log scale): a slope
is vanishing or exploding gradients; the table's ratio is first block / last block.

![response std](figures/response_std.png)

Std of each block's response f(x), after its last BN and before the addition (He et al. Fig. 7).

![lesion](figures/lesion.png)

Test error on the probe after deleting one block at test time (Veit et al. 2016): residual nets keep
working (except at downsampling blocks), plain nets do not; plain downsampling blocks cannot be deleted.
"""
    if lr_summary is not None and lr_summary.exists():
        summary = json.loads(lr_summary.read_text())
        plot_lr_sweep(summary, figures / "lr_sweep.png")
        md += f"""
### BatchNorm and the learning rate

Final training error (%) at depth {summary['runs'][0]['depth']} after `lr_sweep.max_steps` iterations
(`bench lr-sweep`): BN lets nets train at rates where the others diverge.

{lr_table(summary)}

![lr sweep](figures/lr_sweep.png)
"""
    if toy_dir is not None and (toy_dir / "toy_shattering.png").exists():
        md += """
### The toy setting of Balduzzi et al. 2017

![toy](toy/toy_shattering.png)

Scalar input, 256 points on [-2, 2], fully connected width 200, He init, BN (`bench toy`): the lag-1
gradient correlation of plain nets collapses with depth (white noise, paper: about 2^-L), that of
residual nets decays slowly (brown noise, paper: about 1/sqrt(L)).
"""
    return md
