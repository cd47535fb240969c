"""`bench landscape`: Li et al. 2018's loss surfaces of trained cells, 1-D and 2-D, with a non-convexity measure.

For each cell of landscape.variants x grid.depths x landscape.seeds: its final weights (bench/weights.py, checked
against its metrics.json), two filter-normalised directions from landscape.seed (directions.py), and the loss on
a fixed subset of the training set, drawn once from landscape.seed, unaugmented, with BN in eval mode
(surface.py). Writes OUT/landscape.json (each cell's surfaces and non-convexity), OUT/landscape.png (the 1-D and
2-D plots side by side, as the paper's Fig. 5), and each cell's directions to DIRECTIONS/CELL.safetensors.
A diverged cell is recorded as diverged and drawn as nothing: it has no finite weights.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import functional_call

from bench import trained, weights
from bench.config import Params
from bench.files import write_json
from bench.landscape import directions, surface
from bench.landscape.figures import plot
from bench.record import Cell, finite


def measure_cell(cell: weights.Cell, batch: trained.Batch, params: Params) -> tuple[dict, dict]:
    """One cell's 1-D and 2-D surfaces and non-convexity, and its two directions."""
    model = cell.model.eval()
    theta = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p: dict) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, {**p, **buffers}, (batch.x,)), batch.y)

    ls = params.landscape
    d1, d2 = directions.two(theta, ls.seed)
    coords = surface.coordinates(ls.span, ls.resolution)
    one, two = surface.line(loss, theta, d1, coords), surface.plane(loss, theta, d1, d2, coords)
    record = {
        "coordinates": coords.tolist(),
        "loss_1d": [finite(v) for v in one],  # JSON has no NaN or inf: a blown-up loss is null
        "loss_2d": [[finite(v) for v in row] for row in two],
        "loss_at_weights": finite(loss(theta)),
        "nonconvex_fraction": surface.nonconvex_fraction(two, coords[1] - coords[0]),
    }
    stored = {f"d1/{k}": v.contiguous() for k, v in d1.items()} | {f"d2/{k}": v.contiguous() for k, v in d2.items()}
    return record, stored


def draw_cell(params: Params, batch: trained.Batch, stored: Path, c: Cell, cell: weights.Cell | None) -> dict | None:
    """A cell's record, its directions written to STORED/CELL.safetensors; None for a diverged cell."""
    if cell is None:
        return None
    record, directions_of_cell = measure_cell(cell, batch, params)
    save_file(directions_of_cell, str(stored / f"{c.name}.safetensors"))
    return record


def landscape(params: Params, runs: str | Path, data_dir: str | Path, out: str | Path, stored: str | Path) -> dict:
    runs, out, stored = Path(runs), Path(out), Path(stored)
    todo, skipped = trained.cells(params, "landscape")
    found = trained.loaded(runs, todo)
    batch = trained.subset(params, data_dir, "landscape")
    torch.set_num_threads(params.speed.threads)
    out.mkdir(parents=True, exist_ok=True)
    stored.mkdir(parents=True, exist_ok=True)

    draw = partial(draw_cell, params, batch, stored)
    results = trained.measure_each(runs, found, draw, "landscape", params.speed.threads)
    summary = {"params": _params(params), "cells": results, "not_drawn": skipped}
    write_json(out / "landscape.json", summary)
    plot(summary, params, out / "landscape.png")
    return summary


def _params(params: Params) -> dict:
    ls = params.landscape
    return {"resolution": ls.resolution, "span": ls.span, "subset": ls.subset, "seed": ls.seed, "ratio": surface.RATIO}
