"""The report's conclusions, computed: report/claims.json, and every finding sentence of report.md and the README.

Each claim states one hypothesis about the grid (a pathology of deep nets, or what fixes it), the cells it
compares, the test, its estimate with a 95 % interval and the n behind it, and whether it holds:

- true: the whole interval lies on the claimed side of 0;
- false: the whole interval lies on the other side;
- "not shown": the interval includes 0, or the grid cannot carry the test (a cell missing, a seed diverged, one
  seed, a net too far from trained to lose anything), and `why` says which.

Errors are compared by bench.report.contrast (paired over the shared images, t over seeds); a diagnostic, one
number per net, by t over seeds (Welch's for two cells). The deepest and shallowest depths of the grid stand for
"deep" and "shallow". Nothing here is written by hand but the hypotheses.
"""

from __future__ import annotations

from bench.record import Metrics, Run, chance_error
from bench.report import curvature as report_curvature
from bench.report import landscape as report_landscape
from bench.report import paths as report_paths
from bench.report import propagation
from bench.report.contrast import contrast, difference_interval, mean_interval
from bench.report.verdict import PAIRED, Grid, claim, decide

LESION_HEADROOM_LIMIT = 0.5  # an intact error above 50 %: too little left to lose for a lesion to mean anything


def error_specs(shallow: int, deep: int) -> list[tuple[dict, list]]:
    """The claims on errors, each with its contrast's terms: (coefficient, split, variant, depth)."""
    return [
        (
            claim(
                "degradation/plain_bn",
                "degradation",
                f"plain_bn's training error is higher at depth {deep} than at depth {shallow}",
                [f"plain_bn-{deep}", f"plain_bn-{shallow}"],
                PAIRED,
                "error",
            ),
            [(1, "train", "plain_bn", deep), (-1, "train", "plain_bn", shallow)],
        ),
        (
            claim(
                "degradation/residual_bn",
                "residual connections",
                f"from depth {shallow} to {deep}, residual_bn's training error rises less than plain_bn's",
                [f"plain_bn-{deep}", f"plain_bn-{shallow}", f"residual_bn-{deep}", f"residual_bn-{shallow}"],
                PAIRED,
                "error",
            ),
            [
                (1, "train", "plain_bn", deep),
                (-1, "train", "plain_bn", shallow),
                (-1, "train", "residual_bn", deep),
                (1, "train", "residual_bn", shallow),
            ],
        ),
        (
            claim(
                "residual/test_error",
                "residual connections",
                f"at depth {deep}, residual_bn's test error is lower than plain_bn's",
                [f"plain_bn-{deep}", f"residual_bn-{deep}"],
                PAIRED,
                "error",
            ),
            [(1, "test", "plain_bn", deep), (-1, "test", "residual_bn", deep)],
        ),
        (
            claim(
                "overfitting/residual_bn",
                "overfitting",
                f"residual_bn's generalisation gap (test error - clean "
                f"training error) is larger at depth {deep} than at depth {shallow}",
                [f"residual_bn-{deep}", f"residual_bn-{shallow}"],
                PAIRED,
                "error",
            ),
            [
                (1, "test", "residual_bn", deep),
                (-1, "train", "residual_bn", deep),
                (-1, "test", "residual_bn", shallow),
                (1, "train", "residual_bn", shallow),
            ],
        ),
    ]


def error_claims(g: Grid, shallow: int, deep: int) -> list[dict]:
    """Degradation, what residual connections fix, and the overfitting gap: contrasts of errors."""
    out = []
    for c, terms in error_specs(shallow, deep):
        cells = list(dict.fromkeys((v, d) for _, _, v, d in terms))
        why = g.missing(*cells)
        result = None if why else contrast([g.term(k, s, v, d) for k, s, v, d in terms])
        out.append(decide(c, result, g.n(*cells), why))
    return out


def signal_claims(g: Grid, deep: int) -> list[dict]:
    """Vanishing and exploding gradients, variance growth without BN, shattering: diagnostics at initialisation."""
    one = "mean of log10 over seeds, t with n - 1 df"
    specs = [
        (
            "gradients/vanishing",
            "vanishing gradients",
            f"at depth {deep} at initialisation, plain's backward gain is below 1 (vanishing)",
            "plain",
            "init/grad_ratio",
            -1,
        ),
        (
            "gradients/exploding",
            "exploding gradients",
            f"at depth {deep} at initialisation, plain_bn's backward gain is above 1 (exploding)",
            "plain_bn",
            "init/grad_ratio",
            1,
        ),
        (
            "variance/residual",
            "variance growth without BN",
            f"at depth {deep} at initialisation, the residual net "
            f"without BN grows its forward variance at every block (growth per block above 1)",
            "residual",
            "init/variance_growth",
            1,
        ),
    ]
    out = []
    for cid, pathology, hypothesis, v, key, sign in specs:
        c = claim(cid, pathology, hypothesis, [f"{v}-{deep}"], one, "log10")
        why = None if (v, deep) in g.runs else f"{v}-{deep} is not in the grid"
        result = mean_interval(g.scalar(key, v, deep, log=True))
        out.append(decide(c, result, g.n((v, deep)), why, sign))
    c = claim(
        "shattering/residual_bn",
        "shattered gradients",
        f"at depth {deep} at initialisation, the input "
        f"gradients of residual_bn stay more correlated than plain_bn's (Balduzzi et al.)",
        [f"residual_bn-{deep}", f"plain_bn-{deep}"],
        "difference of means over seeds, Welch's t",
        "correlation",
    )
    why = g.missing(("residual_bn", deep), ("plain_bn", deep))
    a, b = (g.scalar("init/shattering", v, deep) for v in ("residual_bn", "plain_bn"))
    out.append(decide(c, difference_interval(a, b), g.n(("residual_bn", deep), ("plain_bn", deep)), why))
    return out


def relative_lesion(m: Metrics) -> float | None:
    """A lesion's mean error increase as a share of the intact net's headroom to chance (1: to chance)."""
    intact, increase = m.scalars.get("end/intact_error"), m.scalars.get("end/lesion_mean_increase")
    chance = chance_error(m.num_classes)
    if intact is None or increase is None or not chance or chance - intact <= 0:
        return None
    return increase / (chance - intact)


def lesion_claims(g: Grid, depths: list[int]) -> list[dict]:
    """Veit et al.: deleting one block costs a residual net less than a plain one, relative to what each has to lose."""
    out = []
    for d in depths:
        c = claim(
            f"lesions/depth-{d}",
            "lesions",
            f"at depth {d}, deleting one block costs residual_bn less than "
            f"plain_bn, relative to each net's headroom to chance",
            [f"plain_bn-{d}", f"residual_bn-{d}"],
            "difference of means over seeds of increase / (chance - intact error), Welch's t",
            "share",
        )
        why = g.missing(("plain_bn", d), ("residual_bn", d))
        if why is None:
            bad = [
                r.cell.name
                for v in ("plain_bn", "residual_bn")
                for r in g.runs[v, d]
                if (r.metrics.scalars.get("end/intact_error") or 1) > LESION_HEADROOM_LIMIT
            ]
            if bad:
                why = f"intact error above {LESION_HEADROOM_LIMIT:.0%} in {', '.join(bad)}: too little left to lose"
        a, b = ([relative_lesion(r.metrics) for r in g.runs.get((v, d), [])] for v in ("plain_bn", "residual_bn"))
        out.append(decide(c, None if why else difference_interval(a, b), g.n(("plain_bn", d), ("residual_bn", d)), why))
    return out


def sweep_claim(sweep: dict | None) -> dict:
    """BN permits higher learning rates: the sweep would need seeds to carry it."""
    c = claim(
        "lr/bn",
        "batch normalisation and the learning rate",
        "BN nets train at learning rates where the same nets without BN diverge",
        [],
        "per lr, diverged or not, over seeds",
        "error",
    )
    if sweep is None:
        return decide(c, None, {}, "the learning-rate sweep did not run")
    seeds = {}
    for r in sweep["runs"]:
        seeds.setdefault((r["variant"], r["lr"]), set()).add(r.get("seed", 0))
    if max(map(len, seeds.values())) < 2:
        return decide(c, None, {}, "the learning-rate sweep has one seed per variant and lr: no claim over seeds")
    return decide(c, None, {}, "a test over the sweep's seeds is not implemented")


def claims(results: list[Run], depths: list[int], sweep: dict | None, studies: dict | None = None) -> list[dict]:
    """Every claim over the grid, in the mission's order of pathologies. `studies`: the summaries of the stages
    that study trained cells (landscape, curvature, paths) by name, None or absent where one did not run."""
    g, studies = Grid(results), studies or {}
    shallow, deep = min(depths), max(depths)
    errors = error_claims(g, shallow, deep)  # degradation and residual connections first, the gap after the signals
    return [
        *errors[:2],
        *signal_claims(g, deep),
        *propagation.claims(g, deep),
        *report_landscape.claims(studies.get("landscape"), deep),
        *report_paths.claims(studies.get("paths"), deep),
        *report_curvature.claims(studies.get("curvature"), shallow, deep),
        *errors[2:],
        *lesion_claims(g, depths),
        sweep_claim(sweep),
    ]


def claims_json(claim_list: list[dict]) -> dict:
    """report/claims.json: `holds` by id first (what `dvc metrics show` and a comparison across machines read),
    then every claim in full."""
    return {"holds": {c["id"]: c["holds"] for c in claim_list}, "claims": claim_list}
