"""The report's learning-rate sweep: BN permits higher learning rates (Ioffe & Szegedy 2015)."""

from __future__ import annotations

from pathlib import Path

from bench.plots import STYLE, save
from bench.record import DIVERGED, DIVERGED_STEP, TRAIN_ERROR


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
        cells = [
            f"diverged at step {by_lr[lr][DIVERGED_STEP]}"
            if by_lr[lr][DIVERGED]
            else f"{100 * by_lr[lr][TRAIN_ERROR]:.1f}"
            for lr in lrs
        ]
        rows.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def section(summary: dict, figures: Path) -> str:
    """Write the sweep's figure; return its Markdown."""
    plot_lr_sweep(summary, figures / "lr_sweep.png")
    return f"""
### BatchNorm and the learning rate

Final training error (%) at depth {summary["runs"][0]["depth"]} after `lr_sweep.max_steps` iterations
(`bench lr-sweep`): BN lets nets train at rates where the others diverge.

{lr_table(summary)}

![lr sweep](figures/lr_sweep.png)
"""
