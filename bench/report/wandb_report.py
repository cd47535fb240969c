"""The grid in W&B: a summary run with a table of every cell and test error vs depth, and a W&B Report
(wandb-workspaces) with one panel grid of error curves per variant, its runs grouped by depth, and the final
errors vs depth. Building the Report needs no server; saving it does, so offline it says how to `wandb sync` first.
"""

from __future__ import annotations

from bench import tracking
from bench.config import Params
from bench.record import DIVERGED, DIVERGED_STEP, GAP, TEST_ERROR, TRAIN_ERROR, Metrics, Run
from bench.report.grid import aggregate, variants_depths

TABLE_COLUMNS = ("cell", "variant", "depth", "seed", TEST_ERROR, TRAIN_ERROR, GAP, DIVERGED, DIVERGED_STEP)
CURVES = ((TRAIN_ERROR, "training error"), (TEST_ERROR, "test error"), (GAP, "generalisation gap"))


def table_row(m: Metrics) -> list:
    """A cell's row of the W&B Table, in TABLE_COLUMNS' order."""
    return [m.cell.name, m.variant, m.depth, m.seed, m.test_error, m.train_error, m.gap, m.diverged, m.diverged_step]


def log_grid(params: Params, results: list[Run]) -> str | None:
    """Log a W&B Table of all cells and test error vs depth per variant, as one run of job_type 'report'.
    `results`: the cells' records, as bench.report.stage.collect returns them."""
    if tracking.mode(params) == "disabled":
        return None
    import wandb

    agg = aggregate([r.metrics for r in results])
    variants, depths = variants_depths(params)
    ys = [[agg[v, d][TEST_ERROR]["mean"] if (v, d) in agg else None for d in depths] for v in variants]
    kw = tracking.run_kwargs(params, "report", "report", ["report"], {"grid": vars(params.grid)})
    with wandb.init(**kw) as run:
        run.log(
            {
                "cells": wandb.Table(columns=list(TABLE_COLUMNS), data=[table_row(r.metrics) for r in results]),
                "test_error_vs_depth": wandb.plot.line_series(
                    xs=depths,
                    ys=[[y if y is not None else float("nan") for y in row] for row in ys],
                    keys=variants,
                    title="Final test error vs depth",
                    xname="depth",
                ),
            }
        )
        return run.dir


def variant_blocks(params: Params, variant: str) -> list:
    """A variant's heading and panel grid: its runs grouped by depth, one panel per curve."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(
        entity=tracking.entity(params) or "",
        project=tracking.project(params),
        name=variant,
        filters=f"Group = '{tracking.group(params)}' and JobType = '{variant}'",
        groupby=["config.cell.depth"],
    )
    panels = [
        wr.LinePlot(title=f"{variant}: {what}", x="trainer/global_step", y=[key], groupby="config.cell.depth")
        for key, what in CURVES
    ]
    return [wr.H2(variant), wr.PanelGrid(runsets=[runset], panels=panels)]


def depth_blocks(params: Params) -> list:
    """The heading and panel grid of the final errors vs depth, over every cell's run."""
    import wandb_workspaces.reports.v2 as wr

    cells = wr.Runset(
        entity=tracking.entity(params) or "",
        project=tracking.project(params),
        name="cells",
        filters=f"Group = '{tracking.group(params)}' and JobType != 'report'",
        groupby=["run.jobType"],
    )
    depth, final = wr.Config("cell.depth"), wr.SummaryMetric
    panels = [
        wr.ScatterPlot(title="final test error vs depth", x=depth, y=final(TEST_ERROR)),
        wr.ScatterPlot(title="final training error vs depth (degradation)", x=depth, y=final(TRAIN_ERROR)),
    ]
    return [wr.H2("Final error vs depth"), wr.PanelGrid(runsets=[cells], panels=panels)]


def propagation_blocks(params: Params) -> list:
    """Signal propagation and branches near zero (bench/diagnostics/propagation.py): their summary scalars
    against depth, at initialisation and after training."""
    import wandb_workspaces.reports.v2 as wr

    cells = wr.Runset(
        entity=tracking.entity(params) or "",
        project=tracking.project(params),
        name="cells",
        filters=f"Group = '{tracking.group(params)}' and JobType != 'report'",
        groupby=["run.jobType"],
    )
    depth, final = wr.Config("cell.depth"), wr.SummaryMetric
    panels = [
        wr.ScatterPlot(title=f"{what} vs depth", x=depth, y=final(key))
        for key, what in (
            ("init/spp_growth", "stream variance growth per block at initialisation"),
            ("end/spp_growth", "stream variance growth per block, trained"),
            ("init/branch_ratio", "||f(x)|| / ||shortcut(x)|| at initialisation"),
            ("end/branch_ratio", "||f(x)|| / ||shortcut(x)||, trained"),
        )
    ]
    return [wr.H2("Signal propagation and branches near zero"), wr.PanelGrid(runsets=[cells], panels=panels)]


def build_report(params: Params):
    """The W&B Report spec for the current group: curves per variant grouped by depth, and error vs depth."""
    import wandb_workspaces.reports.v2 as wr

    group = tracking.group(params)
    blocks = [
        wr.H1(f"Depth ablation: {group}"),
        wr.P(
            "Plain vs residual nets, with and without BatchNorm, at each depth (He et al. 2016, Fig. 6). "
            "Dashed in the paper, here one panel each: training error and test error vs iteration."
        ),
    ]
    for variant in dict.fromkeys(params.grid.variants):  # a variant listed twice: one panel
        blocks += variant_blocks(params, variant)
    return wr.Report(
        project=tracking.project(params),
        entity=tracking.entity(params) or "",
        title=f"bench: {group}",
        blocks=blocks + depth_blocks(params) + propagation_blocks(params),
        description="Depth ablation of the CIFAR ResNet family: plain, plain_bn, residual, residual_bn.",
    )


def publish(params: Params) -> str:
    """Save the Report online and return its URL; offline, explain what to do instead."""
    report = build_report(params)
    if tracking.mode(params) != "online":
        return (
            "W&B is offline, so the Report was built but not saved. Upload the runs, then save it:\n"
            f"{tracking.sync_lines(params)}\n  WANDB_MODE=online bench wandb --report wandb.mode=online"
        )
    report.save()
    return f"W&B Report: {report.url}"
