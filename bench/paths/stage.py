"""`bench paths`: the gradient that paths of each length carry through a trained residual net (Veit et al. 2016,
Fig. 6; gradients.py), and the band of lengths that holds most of it.

For each cell of paths.variants x grid.depths x paths.seeds: the final weights (checked against the cell's
metrics.json), in eval mode, on paths.subset fixed training images without augmentation. Writes OUT/paths.json and
OUT/paths.png. A diverged cell is recorded as diverged: it has no finite weights.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from bench import trained, weights
from bench.config import Params
from bench.files import write_json
from bench.paths.figures import plot
from bench.paths.gradients import band, path_gradient_norms
from bench.record import VARIANTS, Cell

MASS = 0.9  # the band holds the central 90 % of the total gradient over path lengths


def check_variants(params: Params) -> None:
    """Only residual variants have paths to count: a plain net has one."""
    if plain := [v for v in params.paths.variants if v in VARIANTS and not VARIANTS[v][0]]:
        raise ValueError(f"paths.variants holds {plain[0]}, a plain net: it has a single path; residual variants only")


def measure_cell(params: Params, batch: trained.Batch, c: Cell, cell: weights.Cell | None) -> dict | None:
    """A cell's gradient by path length and its band; None for a diverged cell."""
    if cell is None:
        return None
    g = torch.Generator().manual_seed(params.paths.seed)
    measured = path_gradient_norms(cell.model, batch.x, batch.y, params.paths.samples, g)
    return {**measured, "band": list(band(measured["total"], MASS))}


def paths(params: Params, runs: str | Path, data_dir: str | Path, out: str | Path) -> dict:
    runs, out = Path(runs), Path(out)
    check_variants(params)
    todo, skipped = trained.cells(params, "paths")
    found = trained.loaded(runs, todo)
    batch = trained.subset(params, data_dir, "paths")
    torch.set_num_threads(params.speed.threads)
    out.mkdir(parents=True, exist_ok=True)

    results = trained.measure_each(runs, found, partial(measure_cell, params, batch), "paths", params.speed.threads)
    summary = {"params": _params(params), "cells": results, "not_measured": skipped}
    write_json(out / "paths.json", summary)
    plot(summary, params, out / "paths.png")
    return summary


def _params(params: Params) -> dict:
    p = params.paths
    return {"subset": p.subset, "samples": p.samples, "seed": p.seed, "mass": MASS}
