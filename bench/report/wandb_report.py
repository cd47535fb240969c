"""The grid in W&B: a summary run with a table of every cell and depth-vs-error plots, and a W&B Report.

The Report (wandb-workspaces) has one panel grid per variant, its runs grouped by depth, with the
training and test error curves, and the depth-vs-error chart. Building it needs no server; saving it
does, so offline it says how to `wandb sync` first.
"""

from __future__ import annotations

from bench import tracking
from bench.config import Params
from bench.record import DIVERGED, DIVERGED_STEP, GAP, TEST_ERROR, TRAIN_ERROR, Cell

TABLE_COLUMNS = ("cell", "variant", "depth", "seed", TEST_ERROR, TRAIN_ERROR, GAP, DIVERGED, DIVERGED_STEP)


def log_grid(params: Params, results: list[dict]) -> str | None:
    """Log a W&B Table of all cells and test error vs depth per variant, as one run of job_type 'report'.
    `results`: the cells' records with their gap, as bench.report.stage.collect returns them."""
    if tracking.mode(params) == "disabled":
        return None
    import wandb

    from bench.report.stage import aggregate

    agg = aggregate(results)
    kw = tracking.run_kwargs(params, "report", "report", ["report"], {"grid": vars(params.grid)})
    with wandb.init(**kw) as run:
        rows = [[Cell(m["variant"], m["depth"], m["seed"]).name, *(m[k] for k in TABLE_COLUMNS[1:])] for m in results]
        depths = sorted(params.grid.depths)
        variants = list(params.grid.variants)
        ys = [[agg[v, d][TEST_ERROR]["mean"] if (v, d) in agg else None for d in depths] for v in variants]
        run.log(
            {
                "cells": wandb.Table(columns=list(TABLE_COLUMNS), data=rows),
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


def build_report(params: Params):
    """The W&B Report spec for the current group: curves per variant grouped by depth, and error vs depth."""
    import wandb_workspaces.reports.v2 as wr

    project, entity, group = tracking.project(params), tracking.entity(params) or "", tracking.group(params)
    blocks = [
        wr.H1(f"Depth ablation: {group}"),
        wr.P(
            "Plain vs residual nets, with and without BatchNorm, at each depth (He et al. 2016, Fig. 6). "
            "Dashed in the paper, here one panel each: training error and test error vs iteration."
        ),
    ]
    for variant in params.grid.variants:
        runset = wr.Runset(
            entity=entity,
            project=project,
            name=variant,
            filters=f"Group = '{group}' and JobType = '{variant}'",
            groupby=["config.cell.depth"],
        )
        blocks += [
            wr.H2(variant),
            wr.PanelGrid(
                runsets=[runset],
                panels=[
                    wr.LinePlot(
                        title=f"{variant}: training error",
                        x="trainer/global_step",
                        y=[TRAIN_ERROR],
                        groupby="config.cell.depth",
                    ),
                    wr.LinePlot(
                        title=f"{variant}: test error",
                        x="trainer/global_step",
                        y=[TEST_ERROR],
                        groupby="config.cell.depth",
                    ),
                    wr.LinePlot(
                        title=f"{variant}: generalisation gap",
                        x="trainer/global_step",
                        y=[GAP],
                        groupby="config.cell.depth",
                    ),
                ],
            ),
        ]
    cells = wr.Runset(
        entity=entity,
        project=project,
        name="cells",
        filters=f"Group = '{group}' and JobType != 'report'",
        groupby=["run.jobType"],
    )
    blocks += [
        wr.H2("Final error vs depth"),
        wr.PanelGrid(
            runsets=[cells],
            panels=[
                wr.ScatterPlot(
                    title="final test error vs depth", x=wr.Config("cell.depth"), y=wr.SummaryMetric(TEST_ERROR)
                ),
                wr.ScatterPlot(
                    title="final training error vs depth (degradation)",
                    x=wr.Config("cell.depth"),
                    y=wr.SummaryMetric(TRAIN_ERROR),
                ),
            ],
        ),
    ]
    return wr.Report(
        project=project,
        entity=entity,
        title=f"bench: {group}",
        blocks=blocks,
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
