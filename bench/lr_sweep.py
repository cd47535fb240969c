"""`bench lr-sweep`: BatchNorm permits higher learning rates (Ioffe & Szegedy 2015).

Every variant of the grid at one depth, at a few learning rates, several runs at a time: the BN
variants should train at rates where the others diverge. One folder per run, plus summary.json.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from bench.config import Params
from bench.files import write_json
from bench.record import DIVERGED, DIVERGED_STEP, TEST_ERROR, TRAIN_ERROR, Cell
from bench.schema import Wandb

NO_WANDB = Wandb(mode="disabled", project=None, entity=None, group=None, dir=None)  # sweep runs are not logged


def _run(params: Params, variant: str, lr: float, data_dir: str, out: str) -> dict:
    """One run of the sweep, in a worker process: `train` at this lr, without the probe diagnostics (the summary
    reads errors only), its summary row."""
    from bench.train.stage import train  # lazy: the workers import it (the forkserver once), not the parent

    s = params.lr_sweep
    p = replace(params, train=replace(params.train, lr=lr, max_steps=s.max_steps), wandb=NO_WANDB)
    m = train(
        p,
        Cell(variant, s.depth, 0),
        Path(out) / f"{variant}-{s.depth}-lr{lr:g}",
        data_dir,
        progress=False,
        diagnose=False,
    )
    return {
        "variant": variant,
        "depth": s.depth,
        "lr": lr,
        **{k: m[k] for k in (TRAIN_ERROR, TEST_ERROR, DIVERGED, DIVERGED_STEP)},
    }


def sweep(params: Params, data_dir: str | Path, out: str | Path, workers: int | None = None) -> list[dict]:
    """Every run, `workers` at a time (default: the CPU cores over speed.threads), each in a process of a pool
    forked from a server that has imported bench.train.stage once. Every run seeds itself, so the rows are the
    same whatever the number of workers; they are written in the sweep's order."""
    runs = [(v, lr) for v in params.grid.variants for lr in params.lr_sweep.lrs]
    workers = workers or max(1, min(len(runs), (os.cpu_count() or 1) // params.speed.threads))
    if workers == 1:  # in this process, as a single run needs no pool
        results = [_run(params, v, lr, str(data_dir), str(out)) for v, lr in runs]
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["bench.train.stage"])
        with ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:  # a fresh process a run
            futures = [pool.submit(_run, params, v, lr, str(data_dir), str(out)) for v, lr in runs]
            for k, ((variant, lr), f) in enumerate(zip(runs, futures), 1):
                f.result()
                print(f"lr sweep {k}/{len(runs)}: {variant}-{params.lr_sweep.depth} at lr {lr:g} done", flush=True)
            results = [f.result() for f in futures]
    write_json(Path(out) / "summary.json", {"runs": results})
    return results
