"""The report's Markdown document, rendered from the grid's records and their aggregate: a pure function of
them, which draws and writes nothing."""

from __future__ import annotations

from bench.config import Params
from bench.record import AT_CHANCE, TRAIN_ERROR, Metrics, Run
from bench.report import pathologies
from bench.report.findings import claims_section, modes_note
from bench.report.grid import (
    environment_section,
    error_table,
    like_for_like,
    preact_like_for_like,
    reference_context,
    variants_depths,
)
from bench.report.noise import noise_section, runs_table

FIGURES = """## Figures

![convergence](figures/convergence.png)

Training (dashed) and test (bold) error vs iteration of the first seed, one colour per depth (He et al. Fig. 6
layout), on a log axis (linear below 1 % where an error reaches 0); dotted: chance. An x at the top marks the
step where a run diverged.

![error vs depth](figures/error_vs_depth.png)

Final training and test error vs depth (log2) per variant, mean ± std over the non-diverged seeds; an x at the
top marks a depth where every seed diverged, "k/n div." a mean that lost seeds.

![gap vs depth](figures/gap_vs_depth.png)

Generalisation gap (test - training error) vs depth per variant. A black square rings a cell at chance: its
near-zero gap is a net that learnt nothing, not good generalisation.
"""


def head(params: Params, results: list[Metrics], chance: float | None) -> str:
    """What ran: the dataset, seeds, cells, schedule and shortcut; what the error tables show."""
    datasets = ", ".join(sorted({m.dataset for m in results}))
    seeds = sorted({m.seed for m in results})
    return f"""# Depth ablation: plain vs residual, with and without BatchNorm

Dataset: {datasets}. Seeds: {len(seeds)} ({", ".join(map(str, seeds))}). Cells: {len(results)}, of which
{sum(m.diverged for m in results)} diverged. Iterations per run: {params.train.max_steps}, batch
{params.train.batch_size}, lr {params.train.lr}, shortcut `{params.model.shortcut}`. One lr serves every variant, not
each variant's best: the nets it was not chosen for are compared at a rate not tuned for them (docs/claims.md, "The
training schedule").

## Final test error (%)

Mean ± sample std over the non-diverged seeds, of the final checkpoint (never the best epoch); n = those seeds.
Diverged seeds (non-finite loss) are counted, not averaged. "At chance / untrained": final training error at
least {AT_CHANCE:g} x chance error{f" ({100 * chance:.0f} %)" if chance else ""}.
"""


def he_section(agg: dict, depths: list[int], datasets: list[str]) -> str:
    """Like for like with He et al. 2016: only on CIFAR-10, the dataset of their numbers."""
    if datasets != ["cifar10"]:
        return ""
    return (
        f"### Like for like with He et al. 2016 (residual_bn)\n\nOur mean over seeds against He et al.'s mean of 5 "
        f"runs at 110, and against their single runs elsewhere: there the noise counts our seed spread once more, "
        f"for the spread of their one run.\n\n{like_for_like(agg, depths)}"
        + (
            f"\n### Like for like with He et al. 2016b (residual_preact)\n\n{preact}"
            if (preact := preact_like_for_like(agg, depths))
            else ""
        )
    )


def document(
    params: Params,
    results: list[Run],
    agg: dict,
    chance: float | None,
    sweep: dict | None,
    toy: dict | None,
    claim_list: list[dict] = (),
    studies: str = "",
) -> str:
    """report.md. `agg`: bench.report.grid.aggregate of the results; `chance`: the chance error, where the cells
    agree on their classes; `sweep`: the learning-rate sweep's summary.json, if any; `toy`: the toy stage's toy.json
    where it drew its figure; `claim_list`: bench.report.claims.claims of the results; `studies`: the sections of the
    stages that study trained cells (loss landscapes, curvature, path lengths), if any."""
    metrics = [r.metrics for r in results]
    variants, depths = variants_depths(params)
    datasets = sorted({m.dataset for m in metrics})
    return f"""{head(params, metrics, chance)}
{claims_section(claim_list) if claim_list else ""}
{modes_note(metrics)}
{reference_context(params, metrics, datasets)}
{error_table(agg, variants, depths)}

{he_section(agg, depths, datasets)}
### Differences within the noise

{noise_section(agg, variants, depths)}
### Each run's test error (%), with its 95 % Wilson interval

Binomial in the number of test images each run was scored on (no interval where it was not recorded).

{runs_table(metrics, variants, depths)}

## Final training error (%)

Of the final weights on the training split, in eval mode and without augmentation (not the last epoch's running,
augmented average). The degradation problem is a *training* error that rises with depth: see the claims
`degradation/*` above.

{error_table(agg, variants, depths, TRAIN_ERROR, refs=False)}

{FIGURES}
{pathologies.section(results, sweep, toy, variants, depths)}
{studies}
## Environment

{environment_section(results)}"""
