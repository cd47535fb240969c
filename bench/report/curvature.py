"""The Hessian in the report (bench/curvature/ measures it in a stage of its own): the section, a table of
lambda_max at initialisation and at the end, the stage's figure, and the claim of Yao et al. 2020 (PyHessian,
Sec. 4) that BN smooths the loss landscape only in deeper nets, computed over seeds."""

from __future__ import annotations

import math
import statistics

from bench.report import markdown
from bench.report.contrast import difference_interval
from bench.report.verdict import claim, decide

FILE, FIGURE = "curvature.json", "curvature.png"
WITHOUT, WITH = "residual", "residual_bn"  # the residual net without BN, and with it


def by_seed(summary: dict, variant: str, depth: int, when: str) -> dict[int, float]:
    """seed -> lambda_max of a cell at `when` (init or end); a diverged seed has no end, a blown-up one none."""
    found = {}
    for r in summary["cells"].values():
        if (r["variant"], r["depth"]) == (variant, depth) and (x := r.get(when, {}).get("lambda_max")) is not None:
            found[r["seed"]] = x
    return found


def log_ratios(summary: dict, depth: int) -> list[float]:
    """log10 lambda_max(without BN) / lambda_max(with BN) at the end, per seed that both nets finished."""
    a, b = by_seed(summary, WITHOUT, depth, "end"), by_seed(summary, WITH, depth, "end")
    return [math.log10(a[s] / b[s]) for s in sorted(a.keys() & b.keys()) if a[s] > 0 and b[s] > 0]


def table(summary: dict, variants: list[str], depths: list[int]) -> str:
    """lambda_max per variant and depth, initialisation -> end, medians over the seeds measured."""
    rows = []
    for v in variants:
        cells = []
        for d in depths:
            init, end = (list(by_seed(summary, v, d, when).values()) for when in ("init", "end"))
            shown = [f"{statistics.median(xs):.3g}" if xs else "-" for xs in (init, end)]
            dead = sum(r["diverged"] for r in summary["cells"].values() if (r["variant"], r["depth"]) == (v, d))
            cells.append(f"{shown[0]} -> {shown[1]}" + (f" ({dead} diverged)" if dead else ""))
        rows.append([v, *cells])
    return markdown.table(["variant", *(f"depth {d}" for d in depths)], rows)


def section(summary: dict | None, folder: str, variants: list[str], depths: list[int]) -> str:
    if summary is None:
        return ""
    p = summary["params"]
    measured = [v for v in variants if any(r["variant"] == v for r in summary["cells"].values())]
    return f"""### Curvature

`bench/curvature/`, after Yao, Gholami, Keutzer and Mahoney 2020 (PyHessian): the largest eigenvalue lambda_max
(Lanczos, ARPACK) and the trace (Hutchinson, {p["samples"]} Rademacher vectors) of the Hessian of the training loss
over every parameter, on {p["subset"]} fixed training images without augmentation. At the end BN is in eval mode,
as the paper measures trained nets; at initialisation in training mode (batch statistics), since eval mode would
apply BN's untouched running statistics, no normalisation at all. lambda_max, median over seeds, initialisation
-> end:

{table(summary, measured, depths)}{"".join(f"{chr(10) * 2}Not measured: {why}." for why in summary["not_measured"])}

![curvature]({folder}/{FIGURE})
"""


def claims(summary: dict | None, shallow: int, deep: int) -> list[dict]:
    """Yao et al.: BN's smoothing (a lower lambda_max than the same net without BN) grows with depth."""
    c = claim(
        "curvature/bn_depth",
        "batch normalisation",
        f"BN lowers the final lambda_max of the residual net by more at depth {deep} than at depth {shallow} "
        f"(Yao et al. 2020: BN smooths the landscape only in deeper nets)",
        [f"{WITHOUT}-{deep}", f"{WITH}-{deep}", f"{WITHOUT}-{shallow}", f"{WITH}-{shallow}"],
        "difference between depths of the mean over seeds of log10 lambda_max(residual) / lambda_max(residual_bn), "
        "Welch's t",
        "log10",
    )
    if summary is None:
        return [decide(c, None, {}, "the curvature stage did not run")]
    a, b = log_ratios(summary, deep), log_ratios(summary, shallow)
    n = {f"depth {deep}": len(a), f"depth {shallow}": len(b)}
    why = None
    if min(len(a), len(b)) < 2:
        seeds = [r for r in summary["cells"].values() if (r["variant"], r["depth"]) == (WITHOUT, deep)]
        dead = sum(r["diverged"] for r in seeds)
        why = (
            f"{dead} of {len(seeds)} seeds of {WITHOUT}-{deep} diverged: no final lambda_max without BN to compare"
            if dead
            else "fewer than 2 seeds with both nets measured at each depth (curvature.seeds)"
        )
    return [decide(c, None if why else difference_interval(a, b), n, why)]
