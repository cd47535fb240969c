"""The report's diagnostics section: why plain deep nets fail, measured per cell (bench.diagnostics.probe).

Figures: gradient correlation (shattering) vs depth, the backward signal and relative weight gradient
per block at initialisation, the response std of every 3x3 layer (He et al. Fig. 7), lesions (Veit
et al. 2016); a table of the scalar diagnostics over seeds; the learning-rate sweep (bench.report.lr).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from bench.plots import STYLE, save
from bench.record import DIVERGED, Cell
from bench.report import lr as report_lr
from bench.report.figures import depth_axis
from bench.report.stats import summarise

DIAGNOSTIC_COLUMNS = (  # (metrics.json key, header, as %)
    ("init/grad_ratio", "backward signal, first / last block, at init", False),
    ("init/shattering", "gradient correlation at init", False),
    ("end/shattering", "gradient correlation after training", False),
    ("init/shattering_lag1", "lag-1 correlation at init", False),
    ("init/variance_growth", "forward variance growth per block at init", False),
    ("end/intact_error", "probe error, intact", True),
    ("end/lesion_mean_increase", "lesion: mean increase, other blocks", True),
    ("end/lesion_downsampling_increase", "lesion: mean increase, downsampling blocks", True),
    ("end/bn_scale_change", "mean abs(BN scale - 1) after training", False),
    ("end/bn_train_mode_error", "probe error, BN train mode", True),
    ("end/bn_eval_mode_error", "probe error, BN eval mode", True),
)
SATURATED = {"init/grad_ratio": "init/grad_saturated", "end/grad_ratio": "end/grad_saturated"}
LESION_KEYS = {"end/lesion_mean_increase", "end/lesion_downsampling_increase"}  # meaningless for an untrained net


def _mean_std(values: list[float], percent: bool) -> str:
    scale, s = 100 if percent else 1, summarise(values)
    return f"{scale * s['mean']:.3g}" + (f" ± {scale * s['std']:.2g}" if s["std"] is not None else "")


def _entry(ms: list[dict], key: str, percent: bool) -> str:
    """Mean ± std over the seeds that measured `key`; why the others did not (saturated, at chance)."""
    if key in LESION_KEYS and all(m.get("end/lesion_at_chance") for m in ms):
        return "at chance: untrained"
    values = [m[key] for m in ms if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
    saturated = sum(bool(m.get(SATURATED.get(key, ""))) for m in ms)
    notes = [f"{saturated}/{len(ms)} saturated"] if saturated else []
    if values and len(values) < len(ms) and not saturated:  # none at all: not applicable (no BN, no such block)
        notes.append(f"{len(ms) - len(values)}/{len(ms)} not measured")  # or diverged
    text = _mean_std(values, percent) if values else "–"
    return text + (f" ({', '.join(notes)})" if notes else "")


def _cells(results: list[dict]) -> dict[tuple[str, int], list[dict]]:
    groups = {}
    for m in sorted(results, key=lambda m: m["seed"]):
        groups.setdefault((m["variant"], m["depth"]), []).append(m)
    return groups


def diagnostics_table(results: list[dict]) -> str:
    """One row per variant x depth: each scalar diagnostic's mean ± sample std over the seeds."""
    head = ["cell", "seeds", *(h + (" (%)" if pct else "") for _, h, pct in DIAGNOSTIC_COLUMNS)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (v, d), ms in sorted(_cells(results).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        dead = sum(m[DIVERGED] for m in ms)
        seeds = f"{len(ms)}" + (f", {dead} diverged" if dead else "")
        rows.append(
            "| " + " | ".join([f"{v}-{d}", seeds, *(_entry(ms, k, pct) for k, _, pct in DIAGNOSTIC_COLUMNS)]) + " |"
        )
    return "\n".join(rows)


def _diagnostics(runs: Path, m: dict) -> dict:
    """A cell's diagnostics.json ({} where the cell has none)."""
    path = runs / Cell(m["variant"], m["depth"], m["seed"]).name / "diagnostics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _per_layer(runs: Path, results: list[dict], when: str, key: str) -> dict:
    """{(variant, depth): per-block or per-layer list} of the first seed that measured it."""
    out = {}
    for (v, d), ms in _cells(results).items():
        for m in ms:
            record = _diagnostics(runs, m).get(when, {})
            if record.get(key):
                out[v, d] = [x if x is not None else math.nan for x in record[key]]
                break
    return out


def _depth_colours(depths: list[int]):
    import matplotlib.pyplot as plt

    return dict(zip(depths, plt.cm.viridis([i / max(1, len(depths) - 1) for i in range(len(depths))])))


def plot_per_block(
    runs: Path,
    results: list[dict],
    variants: list[str],
    when: str,
    key: str,
    ylabel: str,
    title: str,
    path: Path,
    log: bool = False,
    xlabel: str = "block",
) -> None:
    """One panel per variant, one line per depth: a per-block (or per-layer) diagnostic against its index."""
    import matplotlib.pyplot as plt

    data = _per_layer(runs, results, when, key)
    colours = _depth_colours(sorted({d for _, d in data}))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.6), sharey=True, squeeze=False)
    for ax, v in zip(axes[0], variants):
        for d, colour in colours.items():
            if (v, d) in data:
                ys = data[v, d]
                ax.plot(range(1, len(ys) + 1), ys, marker=".", color=colour, label=f"depth {d}")
        ax.set_title(STYLE[v][1])
        ax.set_xlabel(xlabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    save(fig, path)


def plot_response(runs: Path, results: list[dict], variants: list[str], path: Path) -> None:
    """He et al. 2016 Fig. 7: the std of every 3x3 layer's response after training, by layer (top) and
    sorted by magnitude (bottom); one colour per variant, one line style per depth."""
    import matplotlib.pyplot as plt

    data = _per_layer(runs, results, "end", "response_std")
    depths = sorted({d for _, d in data})
    styles = dict(zip(depths, ["-", "--", ":", "-."] * len(depths)))
    fig, axes = plt.subplots(2, 1, figsize=(9, 7))
    for (v, d), ys in sorted(data.items(), key=lambda kv: (kv[0][1], variants.index(kv[0][0]))):
        colour, name = STYLE[v]
        axes[0].plot(range(1, len(ys) + 1), ys, styles[d], color=colour, label=f"{name}-{d}")
        axes[1].plot(range(1, len(ys) + 1), sorted(ys, reverse=True), styles[d], color=colour)
    for ax, xlabel in zip(axes, ("layer index (3x3 convs, input to output)", "layer index (sorted by magnitude)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("std of the response")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=3)
    fig.suptitle("Response std of every 3x3 layer after training, after BN and before ReLU or + (He et al. Fig. 7)")
    save(fig, path)


def plot_lesions(runs: Path, results: list[dict], variants: list[str], path: Path) -> None:
    """Veit et al. 2016: the probe error with one block deleted, against the intact error (dashed), at the
    deepest depth; downsampling blocks as crosses; a net at chance is labelled untrained."""
    import matplotlib.pyplot as plt

    depth = max(m["depth"] for m in results)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for v in variants:
        ms = [m for m in results if m["variant"] == v and m["depth"] == depth and not m[DIVERGED]]
        d = _diagnostics(runs, ms[0]).get("end") if ms else None
        if not d:
            continue
        colour, name = STYLE[v]
        label = name + (" (at chance: untrained)" if d["lesion_at_chance"] else "")
        xs = range(1, len(d["lesion_error"]) + 1)
        errs = [100 * e if e is not None else math.nan for e in d["lesion_error"]]
        ax.plot(xs, errs, marker=".", color=colour, label=label)
        ax.plot(
            [x for x, down in zip(xs, d["lesion_downsampling"]) if down],
            [e for e, down in zip(errs, d["lesion_downsampling"]) if down],
            "x",
            ms=9,
            mew=2,
            color=colour,
        )
        ax.axhline(100 * d["intact_error"], ls="--", lw=1, color=colour)
    ax.set_xlabel(f"deleted block (depth {depth}; x: downsampling block)")
    ax.set_ylabel("probe error with the block deleted (%)")
    ax.set_title("Lesion study (Veit et al. 2016); dashed: the intact net's error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def plot_shattering(results: list[dict], variants: list[str], depths: list[int], path: Path) -> None:
    """Mean correlation between input gradients at distinct points of image-to-image paths vs depth, at init
    and after training: mean ± std over seeds (each seed's value is itself a mean over image pairs)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, when in zip(axes, ("init", "end")):
        for v in variants:
            pts = []
            for d in depths:
                vals = [
                    m[f"{when}/shattering"]
                    for m in results
                    if m["variant"] == v and m["depth"] == d and isinstance(m.get(f"{when}/shattering"), float)
                ]
                if vals:
                    s = summarise(vals)
                    pts.append((d, s["mean"], s["std"] or 0))
            ax.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                yerr=[p[2] for p in pts],
                marker="o",
                capsize=3,
                color=STYLE[v][0],
                label=STYLE[v][1],
            )
        ax.set_title("at initialisation" if when == "init" else "after training")
        depth_axis(ax, depths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("correlation of d logit / d input\nbetween distinct points of a path")
    fig.suptitle("Shattered gradients (Balduzzi et al. 2017) between two probe images")
    save(fig, path)


def probe_text(runs: Path, results: list[dict]) -> str:
    """How the probe was drawn, from the first cell's diagnostics.json."""
    for m in results:
        if p := _diagnostics(runs, m).get("probe"):
            return (
                f"{p['size']} test images, stratified by class ({min(p['class_counts'])} to "
                f"{max(p['class_counts'])} per class) with seed {p['seed']}, the same for every cell"
            )
    return "a fixed batch of test images"


def bn_note(results: list[dict]) -> str:
    """He et al.'s ordering of response stds shows through BN's learned scales: say when training left them near 1."""
    moved = [m["end/bn_scale_change"] for m in results if isinstance(m.get("end/bn_scale_change"), float)]
    if moved and statistics.fmean(moved) < 0.05:
        return (
            f"- **BN scales**: training moved BN's scales by {statistics.fmean(moved):.3f} on average (mean "
            f"abs(gamma - 1)): too little for the response stds to show He et al.'s ordering, which they "
            f"read after 64,000 iterations.\n"
        )
    return ""


def section(
    runs: Path,
    results: list[dict],
    variants: list[str],
    depths: list[int],
    figures: Path,
    lr_summary: Path | None,
    toy_dir: Path | None,
) -> str:
    """Write the figures; return the Markdown section that embeds them."""
    plot_shattering(results, variants, depths, figures / "shattering_vs_depth.png")
    plot_per_block(
        runs,
        results,
        variants,
        "init",
        "activation_grad_rms",
        "RMS of d loss / d block output",
        "Backward signal per block at initialisation (falls towards the input: vanishing; rises: exploding)",
        figures / "grad_rms_per_block.png",
        log=True,
    )
    plot_per_block(
        runs,
        results,
        variants,
        "init",
        "relative_weight_grad",
        "||d loss / d W|| / ||W||",
        "Relative weight gradient per block at initialisation",
        figures / "relative_grad_per_block.png",
        log=True,
    )
    plot_response(runs, results, variants, figures / "response_std.png")
    plot_lesions(runs, results, variants, figures / "lesion.png")
    md = f"""## Diagnostics of the pathologies

Measured by `bench/diagnostics/probe.py` on the probe: {probe_text(runs, results)}, at initialisation (BN
calibrated on the probe) and after training. Mean ± sample std over the seeds; diverged seeds
have no end-of-training diagnostics.

{diagnostics_table(results)}

- **Backward signal**: the RMS per element of d loss / d (block output), first block over last.
  Above 1 the gradient grows towards the input (exploding), below 1 it shrinks (vanishing). A loss
  saturated at exactly 0 has no gradient at all: the ratio is then not a number, and marked *saturated*.
- **Gradient correlation** (Balduzzi et al. 2017): the mean correlation between d logit / d input at
  distinct points of the straight path between two probe images of different classes, averaged over
  the image pairs. 1: the net is locally linear along the path; 0: its gradients are white noise
  (shattered). The lag-1 correlation compares neighbouring points only, and stays high longer.
- **Lesions** (Veit et al. 2016): the probe error with one block deleted, beside the intact error.
  Downsampling blocks, whose shortcut is not the identity, are summarised apart. A net whose intact
  error is at chance has nothing to lose: *at chance: untrained*, not robust.
{bn_note(results)}
![shattering](figures/shattering_vs_depth.png)

![gradient RMS](figures/grad_rms_per_block.png)

The backward signal per block at initialisation (log scale): a straight slope is a geometric
vanishing or exploding of the gradient with depth.

![relative gradient](figures/relative_grad_per_block.png)

![response std](figures/response_std.png)

Std of every 3x3 layer's response after training, after BN and before the ReLU or the addition (He
et al. Fig. 7), by layer and sorted by magnitude.

![lesion](figures/lesion.png)
"""
    if lr_summary is not None and lr_summary.exists():
        md += report_lr.section(json.loads(lr_summary.read_text()), figures)
    if toy_dir is not None and (toy_dir / "toy_shattering.png").exists():
        md += """
### The toy setting of Balduzzi et al. 2017

![toy](toy/toy_shattering.png)

Scalar input, 256 points on [-2, 2], fully connected width 200, He init, BN (`bench toy`). Left: the
statistic the paper's curves describe, the correlation between the gradients dy/dx at two distinct
inputs over the random readout weights (the cosine of the hidden layer's Jacobians at the two
inputs), averaged over all pairs of the 256 points; mean ± std over random nets, beside the paper's
2^-L (plain) and 1/sqrt(L) (residual with BN). Right: the lag-1 autocorrelation of dy/dx along the
line, which compares neighbouring points only, with no theory curve.
"""
    return md
