"""`bench lr-sweep`: BatchNorm permits higher learning rates (Ioffe & Szegedy 2015).

Every variant of the grid at one depth, at a few learning rates, in one process: the BN variants
should train at rates where the others diverge. One folder per run, plus summary.json.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.config import Params, Wandb
from bench.files import write_json
from bench.record import DIVERGED, DIVERGED_STEP, TEST_ERROR, TRAIN_ERROR, Cell


NO_WANDB = Wandb(mode="disabled", project=None, entity=None, group=None, dir=None)  # sweep runs are not logged


def sweep(params: Params, data_dir: str | Path, out: str | Path) -> list[dict]:
    from bench.train import train

    s, out = params.lr_sweep, Path(out)
    runs = [(v, lr) for v in params.grid.variants for lr in s.lrs]
    results = []
    for k, (variant, lr) in enumerate(runs, 1):
        p = replace(params, train=replace(params.train, lr=lr, max_steps=s.max_steps), wandb=NO_WANDB)
        print(f"lr sweep {k}/{len(runs)}: {variant}-{s.depth} at lr {lr:g}", flush=True)
        m = train(p, Cell(variant, s.depth, 0), out / f"{variant}-{s.depth}-lr{lr:g}", data_dir, progress=False)
        results.append({"variant": variant, "depth": s.depth, "lr": lr,
                        **{k: m[k] for k in (TRAIN_ERROR, TEST_ERROR, DIVERGED, DIVERGED_STEP)}})
    write_json(out / "summary.json", {"runs": results})
    return results
