"""The report's diagnostics section as Markdown: why plain deep nets fail, measured per cell
(bench.diagnostics.probe): a table of the scalar diagnostics over seeds, what they mean, the section's figures
(drawn by bench.report.pathology_figures), the learning-rate sweep (bench.report.lr) and the toy setting.
"""

from __future__ import annotations

import statistics

from bench.record import Metrics, Run
from bench.report import lr as report_lr
from bench.report.grid import by_cell
from bench.report.markdown import plus_minus, table
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

MEANINGS = """- **Backward signal**: the RMS per element of d loss / d (block output), first block over last.
  Above 1 the gradient grows towards the input (exploding), below 1 it shrinks (vanishing). A loss
  saturated at exactly 0 has no gradient at all: the ratio is then not a number, and marked *saturated*.
- **Gradient correlation** (Balduzzi et al. 2017): the mean correlation between d logit / d input at
  distinct points of the straight path between two probe images of different classes, averaged over
  the image pairs. 1: the net is locally linear along the path; 0: its gradients are white noise
  (shattered). The lag-1 correlation compares neighbouring points only, and stays high longer.
- **Lesions** (Veit et al. 2016): the probe error with one block deleted, beside the intact error.
  Downsampling blocks, whose shortcut is not the identity, are summarised apart. A net whose intact
  error is at chance has nothing to lose: *at chance: untrained*, not robust.
"""
FIGURES = """
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
TOY_FIGURE = "toy_shattering.png"  # in the toy stage's folder, report/toy
TOY = f"""
### The toy setting of Balduzzi et al. 2017

![toy](toy/{TOY_FIGURE})

Scalar input, 256 points on [-2, 2], fully connected width 200, He init, BN (`bench toy`). Left: the
statistic the paper's curves describe, the correlation between the gradients dy/dx at two distinct
inputs over the random readout weights (the cosine of the hidden layer's Jacobians at the two
inputs), averaged over all pairs of the 256 points; mean ± std over random nets, beside the paper's
2^-L (plain) and 1/sqrt(L) (residual with BN). Right: the lag-1 autocorrelation of dy/dx along the
line, which compares neighbouring points only, with no theory curve.
"""


def entry(seeds: list[dict], key: str, percent: bool) -> str:
    """Mean ± std of `key` over the seeds (each seed's scalar diagnostics) that measured it; why the others did
    not (saturated, at chance)."""
    if key in LESION_KEYS and all(s.get("end/lesion_at_chance") for s in seeds):
        return "at chance: untrained"
    values = [s[key] for s in seeds if s.get(key) is not None]  # a diverged seed has no "end/..."
    saturated = sum(bool(s.get(SATURATED.get(key, ""))) for s in seeds)
    notes = [f"{saturated}/{len(seeds)} saturated"] if saturated else []
    if values and len(values) < len(seeds) and not saturated:  # none at all: not applicable (no BN, no such block)
        notes.append(f"{len(seeds) - len(values)}/{len(seeds)} not measured")  # or diverged
    s = summarise(values)
    text = plus_minus(s["mean"], s["std"], ".3g", ".2g", 100 if percent else 1) if values else "–"
    return text + (f" ({', '.join(notes)})" if notes else "")


def diagnostics_table(results: list[Metrics]) -> str:
    """One row per variant x depth: each scalar diagnostic's mean ± sample std over the seeds."""
    head = ["cell", "seeds", *(h + (" (%)" if pct else "") for _, h, pct in DIAGNOSTIC_COLUMNS)]
    rows = []
    for (v, d), ms in sorted(by_cell(results).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        dead = sum(m.diverged for m in ms)
        seeds = f"{len(ms)}" + (f", {dead} diverged" if dead else "")
        rows.append([f"{v}-{d}", seeds, *(entry([m.scalars for m in ms], k, pct) for k, _, pct in DIAGNOSTIC_COLUMNS)])
    return table(head, rows)


def probe_text(results: list[Run]) -> str:
    """How the probe was drawn, from the first cell's diagnostics.json: every cell draws the same."""
    p = results[0].diagnostics["probe"]
    return (
        f"{p['size']} test images, stratified by class ({min(p['class_counts'])} to "
        f"{max(p['class_counts'])} per class) with seed {p['seed']}, the same for every cell"
    )


def bn_note(results: list[Metrics]) -> str:
    """He et al.'s ordering of response stds shows through BN's learned scales: say when training left them near 1."""
    moved = [m.scalars["end/bn_scale_change"] for m in results if m.scalars.get("end/bn_scale_change") is not None]
    if moved and statistics.fmean(moved) < 0.05:
        return (
            f"- **BN scales**: training moved BN's scales by {statistics.fmean(moved):.3f} on average (mean "
            f"abs(gamma - 1)): too little for the response stds to show He et al.'s ordering, which they "
            f"read after 64,000 iterations.\n"
        )
    return ""


def section(results: list[Run], sweep: dict | None, toy: bool) -> str:
    """The Markdown section: the table, what its columns mean, the figures; the learning-rate sweep where one
    was run (`sweep`: its summary.json), and the toy setting's figure where the toy stage drew it."""
    metrics = [r.metrics for r in results]
    md = f"""## Diagnostics of the pathologies

Measured by `bench/diagnostics/probe.py` on the probe: {probe_text(results)}, at initialisation (BN
calibrated on the probe) and after training. Mean ± sample std over the seeds; diverged seeds
have no end-of-training diagnostics.

{diagnostics_table(metrics)}

{MEANINGS}{bn_note(metrics)}{FIGURES}"""
    return md + (report_lr.section(sweep) if sweep is not None else "") + (TOY if toy else "")
