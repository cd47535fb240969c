"""`bench report`: aggregate every cell of the grid into tables, figures and a Markdown report.

Final test error per variant x depth as mean +- std over seeds (the final checkpoint, never the best
epoch), beside He et al. 2016 Table 6 and akamaster's reproduction; figures in the layout of He et al.
Fig. 6 (training and test error vs iteration, plain vs residual); error and generalisation gap vs depth.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from bench import record
from bench.config import Params
from bench.files import recover_dir, replace_dir, temporary, write_json, write_text
from bench.grid import cells
from bench.models import VARIANTS
from bench.plots import STYLE, save
from bench.record import DIVERGED, DIVERGED_STEP, GAP, TEST_ERROR, TRAIN_ERROR, Cell
from bench.report_pathologies import section

# CIFAR-10 test error (%) of ResNets (residual_bn, option A). He et al. 2016 Table 6 (110: best of 5 runs;
# mean 6.61 +- 0.16); akamaster/pytorch_resnet_cifar10 reports its best epoch, which is optimistic.
HE2016 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
AKAMASTER = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32, 1202: 6.18}


def read(runs: Path, cell: Cell) -> dict:
    """A finished cell's metrics.json, with its generalisation gap; a missing one is an error naming the cell."""
    path = record.path(runs, cell)
    if not path.exists():
        raise ValueError(f"no results for cell {cell.name}: {path} is missing (run `dvc repro`)")
    try:
        m = json.loads(path.read_text())
        m[TEST_ERROR], m[TRAIN_ERROR]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a cell's metrics.json ({type(e).__name__}: {e}); rerun the cell "
                         f"(dvc repro train@{cell.name})") from None
    return {**m, GAP: m[TEST_ERROR] - m[TRAIN_ERROR] if None not in (m[TEST_ERROR], m[TRAIN_ERROR]) else None}


def collect(params: Params, runs: Path) -> list[dict]:
    """Each grid cell's record; a missing cell is an error naming it."""
    return [read(runs, cell) for cell in cells(params)]


def summarise(values: list[float]) -> dict:
    """Mean and sample std (None for a single value) of the finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def aggregate(results: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (variant, depth): seeds, diverged seeds, and mean/std of test error, train error and gap over the rest."""
    groups = defaultdict(list)
    for m in results:
        groups[m["variant"], m["depth"]].append(m)
    agg = {}
    for key, ms in groups.items():
        ok = [m for m in ms if not m[DIVERGED]]
        agg[key] = {
            "seeds": len(ms), "diverged": len(ms) - len(ok),
            "diverged_steps": [m[DIVERGED_STEP] for m in ms if m[DIVERGED]],
            **{k: summarise([m[k] for m in ok]) for k in (TEST_ERROR, TRAIN_ERROR, GAP)},
        }
    return agg


def fmt_cell(a: dict, key: str = TEST_ERROR) -> str:
    s = a[key]
    if s["n"] == 0:
        return f"diverged (n={a['seeds']})"
    text = f"{100 * s['mean']:.2f}" + (f" ± {100 * s['std']:.2f}" if s["std"] is not None else "")
    extra = f", {a['diverged']} diverged" if a["diverged"] else ""
    return f"{text} (n={a['seeds']}{extra})"


def table(agg: dict, variants: list[str], depths: list[int], key: str = TEST_ERROR, refs: bool = True) -> str:
    head = ["depth", *variants] + (["He et al. 2016", "akamaster (best epoch)"] if refs else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in depths:
        row = [str(d)] + [fmt_cell(agg[v, d], key) if (v, d) in agg else "" for v in variants]
        if refs:
            row += [f"{HE2016[d]:.2f}" if d in HE2016 else "", f"{AKAMASTER[d]:.2f}" if d in AKAMASTER else ""]
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def _read_history(path: Path) -> dict[str, list[float]]:
    cols = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                cols[k].append(float(v) if v not in ("", None) else math.nan)
    return cols


def plot_convergence(results: list[dict], runs: Path, path: Path) -> None:
    """He et al. Fig. 6: error vs iteration; columns plain | residual, rows without | with BN; one colour per
    depth, thin dashed = training error, bold = test error. A diverged run ends in an x at its step."""
    import matplotlib.pyplot as plt

    depths = sorted({m["depth"] for m in results})
    colours = plt.cm.viridis([i / max(1, len(depths) - 1) for i in range(len(depths))])
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, sharey=True)
    for (row, bn), (col, skip) in [((r, b), (c, s)) for r, b in enumerate((False, True)) for c, s in
                                   enumerate((False, True))]:
        ax = axes[row, col]
        variant = next(v for v, sw in VARIANTS.items() if sw == (skip, bn))
        ax.set_title(STYLE[variant][1])
        for colour, d in zip(colours, depths):
            ms = sorted((m for m in results if m["variant"] == variant and m["depth"] == d), key=lambda m: m["seed"])
            if not ms:
                continue
            m = ms[0]  # the first seed: curves of one run, not an average that hides divergence
            h = _read_history(runs / Cell(variant, d, m["seed"]).name / "history.csv")
            label = f"{variant}-{d}" + (f" (diverged at step {m[DIVERGED_STEP]})" if m[DIVERGED] else "")
            ax.plot(h["step"], [100 * e for e in h[TRAIN_ERROR]], "--", lw=1, color=colour)
            ax.plot(h["step"], [100 * e for e in h[TEST_ERROR]], "-", lw=2, color=colour, label=label)
            if m[DIVERGED]:
                ax.plot([m[DIVERGED_STEP]], [100], "x", ms=12, mew=3, color=colour, clip_on=False)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("iteration")
    for ax in axes[:, 0]:
        ax.set_ylabel("error (%)  dashed: training, bold: test")
    fig.suptitle("Training and test error vs iteration (He et al. 2016, Fig. 6 layout)")
    save(fig, path)


def plot_vs_depth(agg: dict, variants: list[str], depths: list[int], panels: list[tuple[str, str]], path: Path,
                  title: str) -> None:
    """One panel per metric: mean +- std over seeds vs depth, one line per variant; x = all seeds diverged."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for v in variants:
            colour, name = STYLE[v]
            pts = [(d, agg[v, d][key]) for d in depths if (v, d) in agg and agg[v, d][key]["n"]]
            ax.errorbar([d for d, _ in pts], [100 * s["mean"] for _, s in pts],
                        yerr=[100 * (s["std"] or 0) for _, s in pts], marker="o", capsize=3, color=colour, label=name)
            dead = [d for d in depths if (v, d) in agg and not agg[v, d][key]["n"]]
            if dead:
                ax.plot(dead, [1.0] * len(dead), "x", ms=12, mew=3, color=colour, transform=ax.get_xaxis_transform(),
                        clip_on=False, label=f"{name}: diverged")
        ax.set_xlabel("depth")
        ax.set_ylabel(label)
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)


def write_depth_csv(agg: dict, depths: list[int], key: str, path: Path) -> None:
    """Wide CSV for `dvc plots`: depth, then one column per variant (empty where absent or diverged)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", *VARIANTS])
        for d in depths:
            w.writerow([d] + [f"{100 * agg[v, d][key]['mean']:.4f}" if (v, d) in agg and agg[v, d][key]["n"] else ""
                              for v in VARIANTS])


def environment_section(runs: Path, results: list[dict]) -> str:
    envs = [json.loads(p.read_text()) for m in results
            if (p := runs / Cell(m["variant"], m["depth"], m["seed"]).name / "env.json").exists()]
    if not envs:
        return "No env.json found in the cells.\n"
    unique = lambda f: sorted({json.dumps(f(e), sort_keys=True) for e in envs})
    lines = []
    for label, f in [("versions", lambda e: e["versions"]), ("hardware", lambda e: e["hardware"]),
                     ("git commit", lambda e: e["git"]), ("data md5", lambda e: e["data_md5"]),
                     ("precision, processes", lambda e: [e["precision"], e["world_size"]])]:
        lines += [f"- {label}: `{u}`" for u in unique(f)]
    return "\n".join(lines) + "\n"


def report(params: Params, runs: str | Path, out: str | Path, lr_summary: str | Path | None = None,
           toy_dir: str | Path | None = None) -> dict:
    """Write the report into `out`: built whole in a folder beside it, then each of its outputs swapped in
    (metrics.json last); what a killed report left is removed first. Other files in `out` (the toy's) stay."""
    runs, final = Path(runs), Path(out)
    results = collect(params, runs)  # every cell must exist before anything is written
    for message in recover_dir(final):
        print(f"bench report: {message}", flush=True)
    out = temporary(final)
    try:
        summary = _write(params, runs, out, results, lr_summary, toy_dir)
        final.mkdir(parents=True, exist_ok=True)
        for entry in sorted(out.iterdir(), key=lambda p: p.name == "metrics.json"):
            replace_dir(entry, final / entry.name) if entry.is_dir() else os.replace(entry, final / entry.name)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return summary


def _write(params: Params, runs: Path, out: Path, results: list[dict], lr_summary, toy_dir) -> dict:
    agg = aggregate(results)
    variants, depths = list(params.grid.variants), sorted(set(params.grid.depths))
    figures = out / "figures"
    figures.mkdir(parents=True)
    plot_convergence(results, runs, figures / "convergence.png")
    plot_vs_depth(agg, variants, depths, [(TRAIN_ERROR, "final training error (%)"),
                                          (TEST_ERROR, "final test error (%)")],
                  figures / "error_vs_depth.png", "Final error vs depth (degradation: plain nets get worse)")
    plot_vs_depth(agg, variants, depths, [(GAP, "test - training error (%)")], figures / "gap_vs_depth.png",
                  "Generalisation gap vs depth")
    write_depth_csv(agg, depths, TEST_ERROR, out / "error_vs_depth.csv")
    write_depth_csv(agg, depths, GAP, out / "gap_vs_depth.csv")

    datasets = sorted({m["dataset"] for m in results})
    seeds = sorted({m["seed"] for m in results})
    note = ("" if datasets == ["cifar10"] else
            f"\nThe reference columns are CIFAR-10 results of ResNets (`residual_bn`, option A); this grid ran on "
            f"**{', '.join(datasets)}**, so they are context, not a comparison.\n")
    md = f"""# Depth ablation: plain vs residual, with and without BatchNorm

Dataset: {', '.join(datasets)}. Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). Cells: {len(results)}, of which
{sum(m[DIVERGED] for m in results)} diverged. Iterations per run: {params.train.max_steps}, batch
{params.train.batch_size}, lr {params.train.lr}, shortcut `{params.model.shortcut}`.

## Final test error (%)

Mean ± sample std over seeds, of the final checkpoint (never the best epoch); n = seeds.
Diverged seeds (non-finite loss) are counted, not averaged.
{note}
{table(agg, variants, depths)}

## Final training error (%)

The degradation problem: deeper plain nets reach a *worse* training error; residual nets do not.

{table(agg, variants, depths, TRAIN_ERROR, refs=False)}

## Figures

![convergence](figures/convergence.png)

Training (dashed) and test (bold) error vs iteration, one colour per depth (He et al. Fig. 6 layout).
An x marks the step where a run diverged.

![error vs depth](figures/error_vs_depth.png)

Final training and test error vs depth per variant; an x at the top marks a depth where every seed diverged.

![gap vs depth](figures/gap_vs_depth.png)

Generalisation gap (test - training error) vs depth per variant.

{section(runs, results, variants, depths, figures, lr_summary and Path(lr_summary), toy_dir and Path(toy_dir))}
## Environment

{environment_section(runs, results)}"""
    write_text(out / "report.md", md)
    summary = {"cells": len(results), "diverged": sum(m[DIVERGED] for m in results)}
    for (v, d), a in sorted(agg.items()):  # mean over seeds; null where every seed diverged
        summary[f"{TEST_ERROR}/{v}-{d}"] = a[TEST_ERROR]["mean"]
    write_json(out / "metrics.json", summary)
    return summary
