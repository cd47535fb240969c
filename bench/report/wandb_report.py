"""The grid in W&B: a summary run with a table of every cell and test error vs depth, and a W&B Report
(wandb-workspaces) with one panel grid of error curves per variant, its runs grouped by depth, and the final
errors vs depth. Building the Report needs no server; saving it does, so offline it says how to `wandb sync` first.
"""

from __future__ import annotations

from pathlib import Path

from bench import tracking
from bench.config import Params
from bench.record import DIVERGED, DIVERGED_STEP, GAP, TEST_ERROR, TRAIN_ERROR, Metrics, Run
from bench.report.grid import aggregate, variants_depths

TABLE_COLUMNS = ("cell", "variant", "depth", "seed", TEST_ERROR, TRAIN_ERROR, GAP, DIVERGED, DIVERGED_STEP)
CURVES = ((TRAIN_ERROR, "training error"), (TEST_ERROR, "test error"), (GAP, "generalisation gap"))


def table_row(m: Metrics) -> list:
    """A cell's row of the W&B Table, in TABLE_COLUMNS' order."""
    return [m.cell.name, m.variant, m.depth, m.seed, m.test_error, m.train_error, m.gap, m.diverged, m.diverged_step]


def log_grid(params: Params, results: list[Run], figures: dict[str, Path] | None = None) -> str | None:
    """Log a W&B Table of all cells and test error vs depth per variant, as one run of job_type 'report', with the
    figures of the stages that study trained cells as images ("figures/NAME"; a figure not drawn is left out).
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
                **{
                    f"figures/{name}": wandb.Image(str(path)) for name, path in (figures or {}).items() if path.exists()
                },
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


def vs_depth(params: Params, heading: str, panels: list[tuple[str, str]]) -> list:
    """A heading and a panel grid over every cell's run: one scatter plot per (title, summary key) against depth."""
    import wandb_workspaces.reports.v2 as wr

    cells = wr.Runset(
        entity=tracking.entity(params) or "",
        project=tracking.project(params),
        name="cells",
        filters=f"Group = '{tracking.group(params)}' and JobType != 'report'",
        groupby=["run.jobType"],
    )
    depth = wr.Config("cell.depth")
    plots = [wr.ScatterPlot(title=title, x=depth, y=wr.SummaryMetric(key)) for title, key in panels]
    return [wr.H2(heading), wr.PanelGrid(runsets=[cells], panels=plots)]


def depth_blocks(params: Params) -> list:
    """The final errors vs depth."""
    return vs_depth(
        params,
        "Final error vs depth",
        [
            ("final test error vs depth", TEST_ERROR),
            ("final training error vs depth (degradation)", TRAIN_ERROR),
        ],
    )


def propagation_blocks(params: Params) -> list:
    """Signal propagation and branches near zero (bench/diagnostics/propagation.py): their summary scalars
    against depth, at initialisation and after training."""
    return vs_depth(
        params,
        "Signal propagation and branches near zero",
        [
            ("stream variance growth per block at initialisation vs depth", "init/spp_growth"),
            ("stream variance growth per block, trained vs depth", "end/spp_growth"),
            ("||f(x)|| / ||shortcut(x)|| at initialisation vs depth", "init/branch_ratio"),
            ("||f(x)|| / ||shortcut(x)||, trained vs depth", "end/branch_ratio"),
        ],
    )


STUDIES = {"landscape": "loss landscapes", "curvature": "curvature", "paths": "path lengths"}  # the report run's images


def study_blocks(params: Params) -> list:
    """A section per stage that studies trained cells (loss landscapes, curvature, path lengths): its figure, from
    the report run."""
    import wandb_workspaces.reports.v2 as wr

    report_run = wr.Runset(
        entity=tracking.entity(params) or "",
        project=tracking.project(params),
        name="report",
        filters=f"Group = '{tracking.group(params)}' and JobType = 'report'",
    )
    blocks = []
    for name, title in STUDIES.items():  # a section per measure
        panel = wr.MediaBrowser(title=title, media_keys=[f"figures/{name}"])
        blocks += [wr.H2(title[0].upper() + title[1:]), wr.PanelGrid(runsets=[report_run], panels=[panel])]
    return blocks


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
        blocks=blocks + depth_blocks(params) + propagation_blocks(params) + study_blocks(params),
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
