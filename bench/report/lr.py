"""The report's learning-rate sweep: BN permits higher learning rates (Ioffe & Szegedy 2015)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.plots import style
from bench.record import DIVERGED, DIVERGED_STEP, TRAIN_ERROR
from bench.report.markdown import table

FIGURE = "lr_sweep.png"


def plot_lr_sweep(summary: dict) -> Figure:
    """Final training error vs learning rate per variant; x = diverged. `summary`: bench lr-sweep's summary.json."""
    runs = summary["runs"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for v in dict.fromkeys(r["variant"] for r in runs):
        rs = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["lr"])
        ok = [r for r in rs if not r[DIVERGED]]
        colour, name = style(v)
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
    return fig


def fmt_sweep_run(r: dict) -> str:
    return f"diverged at step {r[DIVERGED_STEP]}" if r[DIVERGED] else f"{100 * r[TRAIN_ERROR]:.1f}"


def lr_table(summary: dict) -> str:
    """One row per variant, one column per learning rate: the final training error (%), or where it diverged."""
    runs = summary["runs"]
    lrs = sorted({r["lr"] for r in runs})
    by_run = {(r["variant"], r["lr"]): r for r in runs}
    rows = [[v, *(fmt_sweep_run(by_run[v, lr]) for lr in lrs)] for v in dict.fromkeys(r["variant"] for r in runs)]
    return table(["variant", *(f"lr {lr:g}" for lr in lrs)], rows)


def section(summary: dict) -> str:
    """The sweep's Markdown: its table and figure."""
    return f"""
### BatchNorm and the learning rate

Final training error (%) at depth {summary["runs"][0]["depth"]} after `lr_sweep.max_steps` iterations
(`bench lr-sweep`), one seed per rate: what it can carry is the claim `lr/bn` above.

{lr_table(summary)}

![lr sweep](figures/{FIGURE})
"""
