"""The report's diagnostics section as Markdown: why plain deep nets fail, measured per cell
(bench.diagnostics.probe): a table of the scalar diagnostics over seeds, what they mean, the section's figures
(drawn by bench.report.pathology_figures), the learning-rate sweep (bench.report.lr) and the toy setting.
"""

from __future__ import annotations

import statistics

from bench.record import Metrics, Run
from bench.report import lr as report_lr
from bench.report import propagation
from bench.report.claims import LESION_HEADROOM_LIMIT, relative_lesion
from bench.report.grid import by_cell
from bench.report.markdown import plus_minus, table
from bench.report.stats import summarise

DIAGNOSTIC_COLUMNS = (  # (metrics.json key, header, as %)
    ("init/grad_ratio", "backward gain at init (1: no depth effect)", False),
    ("init/shattering", "gradient correlation at init", False),
    ("end/shattering", "gradient correlation after training", False),
    ("init/shattering_lag1", "lag-1 correlation at init", False),
    ("init/variance_growth", "forward variance growth per block at init", False),
    ("init/spp_growth", "channel variance growth per same-shape block at init", False),
    ("end/branch_ratio", "branch / shortcut norm after training", False),
    ("end/intact_error", "probe error, intact", True),
    ("end/lesion_mean_increase", "lesion: mean increase, other blocks", True),
    ("end/lesion_downsampling_increase", "lesion: mean increase, downsampling blocks", True),
    ("end/bn_scale_change", "mean abs(BN scale - 1) after training", False),
    ("end/bn_train_mode_error", "probe error, BN train mode", True),
    ("end/bn_eval_mode_error", "probe error, BN eval mode", True),
)
SATURATED = {"init/grad_ratio": "init/grad_saturated", "end/grad_ratio": "end/grad_saturated"}
LESION_KEYS = {"end/lesion_mean_increase", "end/lesion_downsampling_increase"}  # meaningless for an untrained net

MEANINGS = """- **Backward gain**: the product, over the blocks that keep their shape, of RMS(d loss / d block input) /
  RMS(d loss / d block output), on the units that are on. Above 1 the gradient grows towards the input
  (exploding), below 1 it shrinks (vanishing); a net with no depth effect reads exactly 1 (a Fixup net at
  initialisation: identity blocks). The blocks that change width and resolution are left out: there the
  per-element RMS changes for reasons that are not depth. A loss saturated at exactly 0 has no gradient at
  all: the gain is then not a number, and marked *saturated*.
- **Gradient correlation** (Balduzzi et al. 2017): the mean correlation between d logit / d input at
  distinct points of the straight path between two probe images of different classes, averaged over
  the image pairs. 1: the net is locally linear along the path; 0: its gradients are white noise
  (shattered). The lag-1 correlation compares neighbouring points only, and stays high longer.
- **Lesions** (Veit et al. 2016): the probe error with one block deleted, beside the intact error.
  Downsampling blocks, whose shortcut is not the identity, are summarised apart. A net whose intact
  error is at chance has nothing to lose: *at chance: untrained*, not robust. *Share of headroom*: the mean
  increase over the intact net's distance to chance (1: a deletion takes it to chance), flagged *intact > 50 %*
  where the net has too little left to lose for the share to mean much; *per stage*: the mean increase of the
  deletable blocks of each stage.
- **Response std** (He et al. 2016, Fig. 7): the std of each 3x3 layer's output after its BN (before the
  addition and the ReLU), pooled over the batch, the channels and the positions, with BN in eval mode (its
  running statistics and learned scale, as the trained net is used); He et al. read it the same way after
  training.
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


def toy_text(fits: dict) -> str:
    """The toy's section, its caption's exponents and comparisons computed from toy.json's fits (`bench toy`)."""
    slope, moment, plain = (fits.get(k) for k in ("slope/residual", "gradient_moment_slope/residual", "slope/plain"))
    fitted = f" Fitted exponents: {slope:.2f} residual, {plain:.2f} plain." if None not in (slope, plain) else ""
    versus = ""
    if slope is not None and moment is not None:
        pace = "faster" if slope < -0.5 else "slower" if slope > -0.5 else "as fast as"
        growth = "faster than linearly" if moment > 1 else "linearly or slower"
        versus = (
            f" The dotted 1/sqrt(L) is Theorem 3's, which assumes the gradient's second moment grows linearly in L; "
            f"in this toy it grows as L^{moment:.2f} ({growth}), and the residual correlation falls {pace} than "
            f"1/sqrt(L)."
        )
    return f"""
### The toy setting of Balduzzi et al. 2017

![toy](toy/{TOY_FIGURE})

Scalar input, 256 points on [-2, 2], fully connected width 200, He init, BN (`bench toy`). Left: the
correlation between the gradients dy/dx at two distinct inputs over the random readout weights, averaged over all
pairs of the points, mean ± std over random nets, against depth on log-log axes (a power law is a straight line),
beside the paper's 2^-L (plain) and 1/sqrt(L) (residual with BN).{fitted} The plain
net's decay is no power law and reaches the seeds' noise floor: its exponent only summarises it.{versus} Right:
the lag-1 autocorrelation of dy/dx along the line, which compares neighbouring points only, with no theory curve.
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


def lesion_share(runs: list[Run]) -> str:
    """The lesion's mean increase as a share of the headroom to chance, mean ± std over the seeds."""
    metrics = [r.metrics for r in runs]
    if all(m.scalars.get("end/lesion_at_chance") for m in metrics):
        return "at chance: untrained"
    shares = [relative_lesion(m) for m in metrics]
    s = summarise([x for x in shares if x is not None])
    if not s["n"]:
        return "–"
    intact = [m.scalars.get("end/intact_error") for m in metrics]
    flag = " (intact > 50 %)" if any(x is not None and x > LESION_HEADROOM_LIMIT for x in intact) else ""
    return plus_minus(s["mean"], s["std"], ".2f") + flag


def lesion_stages(runs: list[Run]) -> str:
    """The mean increase (%) of each stage's deletable blocks, averaged over the seeds: "s1 / s2 / s3"."""
    per_seed = []
    for r in runs:
        end = r.diagnostics.get("end") or {}
        errors, intact = end.get("lesion_error"), end.get("intact_error")
        if not errors or intact is None or end.get("lesion_at_chance"):
            continue
        n = len(errors) // 3  # blocks per stage
        per_seed.append(
            [
                statistics.fmean([e - intact for e in errors[i * n : (i + 1) * n] if e is not None] or [0])
                for i in range(3)
            ]
        )
    if not per_seed:
        return "–"
    return " / ".join(f"{100 * statistics.fmean(col):.1f}" for col in zip(*per_seed))


def diagnostics_table(results: list[Run]) -> str:
    """One row per variant x depth: each scalar diagnostic's mean ± sample std over the seeds, and the lesions'
    share of headroom and per-stage increases."""
    head = ["cell", "seeds", *(h + (" (%)" if pct else "") for _, h, pct in DIAGNOSTIC_COLUMNS)]
    head += ["lesion: share of headroom", "lesion: increase per stage (%)"]
    rows = []
    for (v, d), runs in sorted(by_cell(results).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ms = [r.metrics for r in runs]
        dead = sum(m.diverged for m in ms)
        seeds = f"{len(ms)}" + (f", {dead} diverged" if dead else "")
        scalars = [entry([m.scalars for m in ms], k, pct) for k, _, pct in DIAGNOSTIC_COLUMNS]
        rows.append([f"{v}-{d}", seeds, *scalars, lesion_share(runs), lesion_stages(runs)])
    return table(head, rows)


def probe_text(results: list[Run]) -> str:
    """How the probe was drawn, from the first cell's diagnostics.json: every cell draws the same."""
    p = results[0].diagnostics["probe"]
    return (
        f"{p['size']} test images, stratified by class ({min(p['class_counts'])} to "
        f"{max(p['class_counts'])} per class) with seed {p['seed']}, the same for every cell"
    )


def bn_note(results: list[Metrics]) -> str:
    """He et al.'s ordering of response stds shows through BN's learned scales: say, per BN variant, when training
    left them near 1 (a failed cell elsewhere does not hide it)."""
    moved: dict = {}
    for m in results:
        if m.scalars.get("end/bn_scale_change") is not None:
            moved.setdefault(m.variant, []).append(m.scalars["end/bn_scale_change"])
    still = {v: statistics.fmean(xs) for v, xs in moved.items() if statistics.fmean(xs) < 0.05}
    if not still:
        return ""
    which = ", ".join(f"{v} by {x:.3f}" for v, x in still.items())
    return (
        f"- **BN scales**: training moved BN's scales (mean abs(gamma - 1) over the cells) of {which}: too little "
        f"for the response stds to show He et al.'s ordering, which they read after 64,000 iterations.\n"
    )


def section(results: list[Run], sweep: dict | None, toy: dict | None, variants: list[str], depths: list[int]) -> str:
    """The Markdown section: the table, what its columns mean, the figures; the learning-rate sweep where one
    was run (`sweep`: its summary.json), and the toy setting's figure where the toy stage drew it (`toy`: its
    toy.json, {} where it has none)."""
    metrics = [r.metrics for r in results]
    md = f"""## Diagnostics of the pathologies

Measured by `bench/diagnostics/probe.py` on the probe: {probe_text(results)}, at initialisation (BN
calibrated on the probe) and after training. Mean ± sample std over the seeds; diverged seeds
have no end-of-training diagnostics.

{diagnostics_table(results)}

{MEANINGS}{bn_note(metrics)}{FIGURES}
{propagation.section(results, variants, depths)}"""
    return md + (report_lr.section(sweep) if sweep is not None else "") + (toy_text(toy) if toy is not None else "")
