"""What the stages that study trained cells share (bench/landscape/, bench/curvature/, bench/paths/): the cells a
params section names, their weights checked before any work, a fixed subset of the training images, and a cell's
network as it was at initialisation.

A section (landscape, curvature, paths) names variants and seeds; the grid's depths are all drawn. What the grid
does not train (an experiment that shrinks it) is left out with a note instead of refused.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import models, weights
from bench.config import Params
from bench.record import Cell
from bench.train.data import load_prepared, normalise


def cells(params: Params, section: str) -> tuple[list[Cell], list[str]]:
    """The cells of `section`'s variants and seeds as far as the grid trains them, at every depth of the grid, and a
    note for each variant or seed the grid does not train."""
    wanted, grid = getattr(params, section), params.grid
    variants = [v for v in wanted.variants if v in grid.variants]
    seeds = [s for s in wanted.seeds if s in grid.seeds]
    skipped = [f"variant {v} is not in grid.variants" for v in wanted.variants if v not in variants]
    skipped += [f"seed {s} is not in grid.seeds" for s in wanted.seeds if s not in seeds]
    return [Cell(v, d, s) for v in variants for d in grid.depths for s in seeds], skipped


def loaded(runs: Path, todo: list[Cell]) -> dict[Cell, weights.Cell | None]:
    """Each cell's weights, checked before any work (None: diverged, nothing to measure); a cell not trained, or
    whose weights are missing or stale, is refused with what to do."""
    found = {}
    for c in todo:
        metrics = runs / c.name / "metrics.json"
        if not metrics.exists():
            raise ValueError(f"{runs / c.name} has no metrics.json: train it first (`bench grid` or `dvc repro`)")
        diverged = json.loads(metrics.read_text()).get("diverged")
        found[c] = None if diverged else weights.load(runs / c.name)
    return found


def measure_each(
    runs: str | Path,
    found: dict[Cell, weights.Cell | None],
    measure: Callable,
    stage: str,
    threads: int = 1,
    workers: int | None = None,
) -> dict[str, dict]:
    """Each cell's record by name: its variant, depth and seed and whether it diverged, then what
    `measure(cell, its weights or None)` returns with the seconds it took; nothing more where it returns None (a
    diverged cell with nothing to measure). A line per cell, in order, as `stage` finishes it.

    The cells are measured several at a time (`workers`, or as many as the cores allow), each in a worker process
    of `threads` CPU threads that loads the cell's weights from `runs` itself (`found`, checked before any work,
    says only which diverged). Every measure seeds its own generators, so the records are the same whatever the
    number of workers. `measure` crosses to the workers, so it must pickle: a module's function, or a partial of one."""
    todo = list(found.items())
    workers = max(1, min(len(todo), workers or (os.cpu_count() or 1) // threads))
    jobs = [(measure, Path(runs), c, cell is None, threads) for c, cell in todo]
    results = {}
    with _pool(workers, measure) as pool:
        outcomes = pool.map(_measure_one, *zip(*jobs)) if pool else (_measure_one(*job) for job in jobs)
        for k, ((c, cell), (record, seconds)) in enumerate(zip(todo, outcomes), 1):
            results[c.name] = {"variant": c.variant, "depth": c.depth, "seed": c.seed, "diverged": cell is None}
            if record is not None:
                results[c.name] |= {**record, "seconds": seconds}
            done = f"{seconds} s" if record is not None else "nothing to measure"
            print(f"{stage} {k}/{len(todo)}: {c.name} ({done})", flush=True)
    return results


def _measure_one(measure: Callable, runs: Path, c: Cell, diverged: bool, threads: int) -> tuple[dict | None, float]:
    """One cell's record and the seconds it took, in a worker: its weights loaded here, at `threads` threads."""
    torch.set_num_threads(threads)
    cell = None if diverged else weights.load(runs / c.name)
    start = time.perf_counter()
    record = measure(c, cell)
    return record, round(time.perf_counter() - start, 1)


@contextmanager
def _pool(workers: int, measure: Callable):
    """A pool of `workers` processes forked from a server that has imported `measure`'s module once; None (this
    process) for one worker."""
    if workers == 1:
        yield None
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([getattr(measure, "func", measure).__module__])
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        yield pool


@dataclass(frozen=True)
class Batch:
    """A fixed subset of the training images, normalised as the cells were trained, and what a network needs to
    read it."""

    x: torch.Tensor  # float (B, C, H, W), normalised with the training data's mean and std
    y: torch.Tensor  # class indices
    classes: int
    channels: int


def subset(params: Params, data_dir: str | Path, section: str) -> Batch:
    """`section`.subset training images and their labels, drawn once from `section`.seed: the same images for every
    cell, no augmentation."""
    data, wanted = load_prepared(data_dir, params.data), getattr(params, section)
    size, n = wanted.subset, len(data.train.y)
    if size > n:
        raise ValueError(f"{section}.subset={size}, but the training split holds {n} images")
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(wanted.seed))[:size]
    x = normalise(data.train.x[pick], data.mean, data.std)
    return Batch(x, data.train.y[pick], len(data.classes), x.shape[1])


def initial(params: Params, c: Cell, batch: Batch) -> torch.nn.Module:
    """The cell's network as training started, in eval mode: the train stage seeds torch's generator with the
    cell's seed and builds the model first (bench/train/stage.py `build`), so the same two steps give the same
    weights."""
    torch.manual_seed(c.seed)
    model = models.build_model(
        c.variant,
        c.depth,
        params.model.shortcut,
        num_classes=batch.classes,
        in_channels=batch.channels,
        zero_init_residual=params.model.zero_init_residual,
    )
    return model.eval()
