"""`bench curvature`: the Hessian of the training loss of each cell at initialisation and at the end (Yao et al.
2020, PyHessian): its largest eigenvalue and its trace (hessian.py).

For each cell of curvature.variants x grid.depths x curvature.seeds, on curvature.subset fixed training images
without augmentation:
- at the end: the final weights (checked against the cell's metrics.json) in eval mode, BN a fixed linear map, as
  Yao et al. measure trained nets;
- at initialisation: the initial weights (rebuilt from the cell's seed, bench/trained.py) with BN in training mode,
  the loss the first SGD step descends. In eval mode BN would apply its untouched running statistics (mean 0,
  variance 1), that is no normalisation at all, and a BN net would read as the same net without BN.
Writes OUT/curvature.json and OUT/curvature.png. A diverged cell is recorded as diverged and measured at
initialisation only.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import trained, weights
from bench.config import Params
from bench.curvature.figures import plot
from bench.curvature.hessian import TOLERANCE, Hessian, hutchinson_trace, top_eigenvalue
from bench.files import write_json
from bench.record import Cell, finite


def measure(model: torch.nn.Module, batch: trained.Batch, params: Params, training_mode: bool = False) -> dict:
    """lambda_max and the trace (with its standard error) of the mean cross-entropy's Hessian on the batch, BN in
    eval mode (or in training mode: batch statistics)."""
    model.train(training_mode)
    h = Hessian(lambda: F.cross_entropy(model(batch.x), batch.y), list(model.parameters()))
    c = params.curvature
    trace, error = hutchinson_trace(h, c.samples, c.seed)
    return {"lambda_max": finite(top_eigenvalue(h, c.seed)), "trace": finite(trace), "trace_se": finite(error)}


def both_ends(params: Params, batch: trained.Batch, c: Cell, cell: weights.Cell | None) -> dict:
    """A cell at initialisation (a diverged one too) and at the end."""
    ends = {"init": measure(trained.initial(params, c, batch), batch, params, training_mode=True)}
    return ends if cell is None else ends | {"end": measure(cell.model, batch, params)}


def curvature(params: Params, runs: str | Path, data_dir: str | Path, out: str | Path) -> dict:
    runs, out = Path(runs), Path(out)
    todo, skipped = trained.cells(params, "curvature")
    found = trained.loaded(runs, todo)
    batch = trained.subset(params, data_dir, "curvature")
    torch.set_num_threads(params.speed.threads)
    out.mkdir(parents=True, exist_ok=True)

    results = trained.measure_each(runs, found, partial(both_ends, params, batch), "curvature", params.speed.threads)
    summary = {"params": _params(params), "cells": results, "not_measured": skipped}
    write_json(out / "curvature.json", summary)
    plot(summary, params, out / "curvature.png")
    return summary


def _params(params: Params) -> dict:
    c = params.curvature
    return {"subset": c.subset, "samples": c.samples, "seed": c.seed, "tolerance": TOLERANCE, "init_bn": "train mode"}
