"""`bench landscape`: Li et al. 2018's loss surfaces of trained cells, 1-D and 2-D, with a non-convexity measure.

For each cell of landscape.variants x grid.depths x landscape.seeds: its final weights (bench/weights.py, checked
against its metrics.json), two filter-normalised directions from landscape.seed (directions.py), and the loss on
a fixed subset of the training set, drawn once from landscape.seed, unaugmented, with BN in eval mode
(surface.py). Writes OUT/landscape.json (each cell's surfaces and non-convexity), OUT/landscape.png (the 1-D and
2-D plots side by side, as the paper's Fig. 5), and each cell's directions to DIRECTIONS/CELL.safetensors.
A diverged cell is recorded as diverged and drawn as nothing: it has no finite weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import functional_call

from bench import weights
from bench.config import Params
from bench.files import write_json
from bench.landscape import directions, surface
from bench.landscape.figures import plot
from bench.record import Cell, finite
from bench.train.data import load_prepared, normalise


def cells(params: Params) -> tuple[list[Cell], list[str]]:
    """The cells to draw: landscape.variants and landscape.seeds as far as the grid trains them (an experiment that
    shrinks the grid draws what is left), and a note for each one the grid does not train."""
    ls, grid = params.landscape, params.grid
    variants, seeds = [v for v in ls.variants if v in grid.variants], [s for s in ls.seeds if s in grid.seeds]
    skipped = [f"variant {v} is not in grid.variants" for v in ls.variants if v not in variants]
    skipped += [f"seed {s} is not in grid.seeds" for s in ls.seeds if s not in seeds]
    return [Cell(v, d, s) for v in variants for d in grid.depths for s in seeds], skipped


def subset(params: Params, data_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """landscape.subset training images, drawn once from landscape.seed: the same images for every cell."""
    data = load_prepared(data_dir, params.data)
    n = len(data.train.y)
    if params.landscape.subset > n:
        raise ValueError(f"landscape.subset={params.landscape.subset}, but the training split holds {n} images")
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(params.landscape.seed))[: params.landscape.subset]
    return data.train.x[pick], data.train.y[pick]


def measure_cell(cell: weights.Cell, x: torch.Tensor, y: torch.Tensor, params: Params) -> tuple[dict, dict]:
    """One cell's 1-D and 2-D surfaces and non-convexity, and its two directions."""
    model = cell.model.eval()
    theta = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    inputs = normalise(x, cell.mean, cell.std)

    def loss(p: dict) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, {**p, **buffers}, (inputs,)), y)

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


def loaded(runs: Path, todo: list[Cell]) -> dict[Cell, weights.Cell | None]:
    """Each cell's weights, checked before any work (None: diverged, nothing to draw); a cell not trained, or
    whose weights are missing or stale, is refused with what to do."""
    found = {}
    for c in todo:
        metrics = runs / c.name / "metrics.json"
        if not metrics.exists():
            raise ValueError(f"{runs / c.name} has no metrics.json: train it first (`bench grid` or `dvc repro`)")
        diverged = json.loads(metrics.read_text()).get("diverged")
        found[c] = None if diverged else weights.load(runs / c.name)
    return found


def landscape(params: Params, runs: str | Path, data_dir: str | Path, out: str | Path, stored: str | Path) -> dict:
    runs, out, stored = Path(runs), Path(out), Path(stored)
    todo, skipped = cells(params)
    found = loaded(runs, todo)
    x, y = subset(params, data_dir)
    torch.set_num_threads(params.speed.threads)
    out.mkdir(parents=True, exist_ok=True)
    stored.mkdir(parents=True, exist_ok=True)
    results = {}
    for c, cell in found.items():
        start = time.perf_counter()
        results[c.name] = {"variant": c.variant, "depth": c.depth, "seed": c.seed, "diverged": cell is None}
        if cell is None:
            continue
        record, directions_of_cell = measure_cell(cell, x, y, params)
        save_file(directions_of_cell, str(stored / f"{c.name}.safetensors"))
        results[c.name] |= {**record, "seconds": round(time.perf_counter() - start, 1)}
    summary = {"params": _params(params), "cells": results, "not_drawn": skipped}
    write_json(out / "landscape.json", summary)
    plot(summary, params, out / "landscape.png")
    return summary


def _params(params: Params) -> dict:
    ls = params.landscape
    return {"resolution": ls.resolution, "span": ls.span, "subset": ls.subset, "seed": ls.seed, "ratio": surface.RATIO}
