"""`bench grid`: the train stage's cells run concurrently, k per GPU (or k CPU processes), then recorded in DVC.

DVC's repo lock forbids concurrent `dvc repro` in one workspace, and small nets leave an H100 mostly
idle. So the launcher asks DVC which cells are out of date, runs exactly the commands dvc.yaml
declares for them outside DVC, several at a time, then `dvc commit`s those stages: dvc.lock records
the results as if `dvc repro` had made them, and a later `dvc repro` has nothing to redo for them.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from bench.config import Params
from bench.grid import cells
from bench.record import Cell
from bench.stages import executable, stage_command


def dvc(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*executable("dvc"), *args], capture_output=capture, text=True)
    if r.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def stale_cells(params: Params) -> list[Cell]:
    """The grid's cells whose train stage DVC considers out of date (changed or missing deps, params, outs)."""
    status = json.loads(dvc("status", "--json").stdout or "{}")
    return [c for c in cells(params) if f"train@{c.name}" in status]


def slots(workers_per_gpu: int, gpus: list[str] | None) -> list[str | None]:
    """One entry per concurrent worker: the GPU it sees (CUDA_VISIBLE_DEVICES), or None on the CPU."""
    if gpus is None:
        import torch

        gpus = [str(i) for i in range(torch.cuda.device_count())]
    return [g for g in gpus for _ in range(workers_per_gpu)] or [None] * workers_per_gpu


def run_cell(cell: Cell, gpu: str | None, log_dir: Path, threads: int, overrides: list[str]) -> dict:
    """One cell, by the train stage's own command, with its output in log_dir/<cell>.log."""
    name = cell.name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    cmd = [*stage_command(cell), "--no-progress", *overrides]
    start = time.time()
    with open(log_dir / f"{name}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return {"cell": name, "gpu": gpu, "returncode": code, "start": start, "end": time.time()}


def launch(params: Params, workers_per_gpu: int, gpus: list[str] | None = None, log_dir: str | Path = "logs/grid",
           overrides: list[str] = (), commit: bool = True) -> list[dict]:
    """Run the out-of-date cells on every slot, then `dvc commit` the ones that succeeded."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    dvc("repro", "prepare", capture=False)
    todo = stale_cells(params)
    workers = slots(workers_per_gpu, gpus)
    print(f"{len(todo)} of {len(cells(params))} cells to train, {len(workers)} at a time "
          f"({'GPUs ' + ','.join(sorted(set(workers))) if workers[0] is not None else 'CPU processes'}); "
          f"logs in {log_dir}/", flush=True)
    threads = max(1, (os.cpu_count() or 1) // len(workers))
    results, free = [], list(workers)
    with ThreadPoolExecutor(len(workers)) as pool:
        pending = {}
        queue = list(todo)
        while queue or pending:
            while queue and free:
                cell, gpu = queue.pop(0), free.pop(0)
                pending[pool.submit(run_cell, cell, gpu, log_dir, threads, list(overrides))] = gpu
            done = next(as_completed(pending))
            free.append(pending.pop(done))
            r = done.result()
            results.append(r)
            state = "done" if r["returncode"] == 0 else f"FAILED (exit {r['returncode']}, see {log_dir}/{r['cell']}.log)"
            print(f"[{len(results)}/{len(todo)}] {r['cell']} {state} in {r['end'] - r['start']:.0f} s", flush=True)
    ok = [f"train@{r['cell']}" for r in results if r["returncode"] == 0]
    if commit and ok:
        dvc("commit", "--force", *ok)
        print(f"recorded {len(ok)} cells in dvc.lock; `dvc repro` now runs only what remains (sweep, toy, report)")
    return results
