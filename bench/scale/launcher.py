"""`bench grid`: the train stage's cells run concurrently, k per GPU (or k CPU processes), then recorded in DVC.

DVC's repo lock forbids concurrent `dvc repro` in one workspace, and small nets leave an H100 mostly
idle. So the launcher asks DVC which cells are out of date, runs exactly the commands dvc.yaml
declares for them outside DVC, several at a time, and `dvc commit`s the finished cells' stages while the others
train, a batch at most every RECORD_EVERY_S (bench/scale/recorder.py): dvc.lock records the results as if
`dvc repro` had made them, and a later `dvc repro` has nothing to redo for them.

Given bench's main function (`bench grid` passes it), each cell is a fresh process forked from a
forkserver that has already imported what every cell imports (torch, Lightning, W&B, bench): those
imports are most of a small cell's start-up, paid here once per grid instead of once per cell. The
server does nothing but import, so a cell's process is the one `bench train` would be, minus the import
time. Without it (`bench grid --no-forkserver`), each cell is a `bench train` process of its own.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import forkserver
from pathlib import Path

from bench import tracking
from bench.config import Params
from bench.progress import duration, estimate
from bench.record import Cell, cells
from bench.scale.cell_process import Main, cell_main, die_with_parent
from bench.scale.recorder import Recorder, commit_cells, forget_cells
from bench.scale.results import results_table
from bench.scale.stages import executable, stage_command

# dvc.lock gets finished cells at most this often: each commit rewrites and reparses all of it (about 4 s of CPU
# with 75 cells), time taken from the cells on a machine whose cores they fill (bench/scale/recorder.py)
RECORD_EVERY_S = 60.0

# What a cell imports before its first step, imported once by the forkserver. wandb.init imports W&B's
# launch package on every run (about half a second); Lightning's W&B logger is imported when the run starts.
PRELOAD = [
    "bench.cli",
    "bench.train.stage",
    "lightning.pytorch.loggers.wandb",
    "wandb",
    "wandb.sdk.launch.inputs.internal",
]


def dvc(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """`dvc ARGS`; a failure is a ValueError of one line with DVC's own error (its repo lock held by another
    DVC process, say), or pointing to it where DVC printed it to the terminal (capture=False)."""
    r = subprocess.run([*executable("dvc"), *args], capture_output=capture, text=True)
    if r.returncode:
        said = [line.strip() for line in (r.stderr or "").splitlines() + (r.stdout or "").splitlines() if line.strip()]
        errors = [line for line in said if line.startswith("ERROR")] or said[-1:]
        why = ": " + " ".join(errors[0].split())[:300] if errors else "; its message is above" if not capture else ""
        raise ValueError(f"dvc {' '.join(args)} failed (exit {r.returncode}){why}")
    return r


def stale_cells(params: Params) -> list[Cell]:
    """The grid's cells whose train stage DVC considers out of date (changed or missing deps, params, outs)."""
    status = json.loads(dvc("status", "--json").stdout or "{}")
    return [
        c for c in cells(params) if f"train@{c.name}" in status and not only_weights_missing(status[f"train@{c.name}"])
    ]


def only_weights_missing(changes: list) -> bool:
    """Whether a stage's `dvc status` changes are only its weights.safetensors missing from the workspace (a fresh
    clone without `dvc pull`): the results in git stand, so the cell is not retrained (`dvc repro --allow-missing`
    decides the same)."""
    outs = [c["changed outs"] for c in changes if isinstance(c, dict) and set(c) == {"changed outs"}]
    return len(outs) == len(changes) and all(
        status in ("deleted", "not in cache") and path.endswith("/weights.safetensors")
        for o in outs
        for path, status in o.items()
    )


def slots(jobs: int, gpus: list[str] | None) -> list[str | None]:
    """One entry per concurrent worker, `jobs` per GPU: the GPU it sees (CUDA_VISIBLE_DEVICES), or None on the CPU."""
    if gpus is None:
        import torch  # only to count the GPUs: the launcher's own process needs torch for nothing else

        gpus = [str(i) for i in range(torch.cuda.device_count())]
    return [g for g in gpus for _ in range(jobs)] or [None] * jobs


def cell_env(threads: int, gpu: str | None = None) -> dict[str, str]:
    """A cell's environment: this one, with its share of the CPU threads and its GPU."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def in_process_argv(cmd: list[str]) -> list[str] | None:
    """The arguments of `cmd` if it runs bench's own script (the forkserver can run it in-process), else None."""
    program = executable("bench")
    return cmd[len(program) :] if cmd[: len(program)] == program and len(program) == 1 else None


def run_cell(
    cell: Cell, gpu: str | None, log_dir: Path, threads: int, overrides: list[str], main: Main | None = None
) -> dict:
    """One cell, by the train stage's own command, with its output in log_dir/<cell>.log: forked from the
    forkserver and run by `main` where given, else as a program of its own."""
    cmd = [*stage_command(cell), "--no-progress", *overrides]
    log, env = log_dir / f"{cell.name}.log", cell_env(threads, gpu)
    start = time.time()
    argv = in_process_argv(cmd) if main else None
    code = forked(main, cmd, argv, env, log) if argv is not None else spawned(cmd, env, log)
    return {"cell": cell.name, "gpu": gpu, "returncode": code, "start": start, "end": time.time()}


def spawned(cmd: list[str], env: dict[str, str], log: Path) -> int:
    """`cmd` as a new program: its own interpreter, its own imports."""
    with open(log, "w") as out:
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent).returncode


def forked(main: Main, cmd: list[str], argv: list[str], env: dict[str, str], log: Path) -> int:
    """`main(argv)` in a process forked from the forkserver; its exit code (-N: killed by signal N)."""
    p = multiprocessing.get_context("forkserver").Process(target=cell_main, args=(main, cmd, argv, env, str(log)))
    p.start()
    p.join()
    return p.exitcode


def share_wandb_service(params: Params) -> None:
    """One W&B service for every cell, started here (`wandb.setup()`, W&B's way for a parent of processes that log):
    it puts the service's address in this environment, which each cell's is copied from, so a cell connects to it
    instead of starting one of its own (about 0.2 s a cell). It stops when the launcher ends. Nothing where the cells
    log no W&B run, or where W&B cannot start: each cell then starts its own, or reports why it cannot."""
    if tracking.mode(params) == "disabled":
        return
    try:
        import wandb

        wandb.setup()
    except Exception as e:  # W&B never costs a result: the cells try for themselves
        print(f"W&B: no shared service ({type(e).__name__}: {e}); each cell starts its own", flush=True)


def start_forkserver(env: dict[str, str]) -> None:
    """Start the forkserver (once per process) in the cells' environment: OpenMP and OpenBLAS size their
    thread pools from OMP_NUM_THREADS when torch and numpy are loaded, which happens in the server."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    with environ(env):
        forkserver.ensure_running()


@contextmanager
def environ(env: dict[str, str]):
    """os.environ replaced by `env` for the block (a process started in it inherits `env`), then restored."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def time_left(
    queue: list[Cell], running: dict[Cell, float], finished: dict[Cell, float], workers: int, now: float
) -> float | None:
    """When the last cell should end: the queue handed out in order to the first free worker, as launch does."""
    left = [estimate(c, finished) for c in [*running, *queue]]
    if None in left:
        return None
    free = sorted(
        [max(0.0, t - (now - start)) for t, start in zip(left, running.values())] + [0.0] * (workers - len(running))
    )
    for t in left[len(running) :]:
        free[0] += t
        free.sort()
    return max(free)


def report(r: dict, k: int, n: int, log_dir: Path, left: float | None) -> None:
    """The cell's progress line; a failed cell's last log lines, so the error shows where the run stopped."""
    log = log_dir / f"{r['cell']}.log"
    took = f"in {duration(r['end'] - r['start'])}"
    state = f"done {took}" if r["returncode"] == 0 else f"FAILED {took} (exit {r['returncode']}; log: {log})"
    eta = f"; about {duration(left)} left" if left and k < n else ""
    print(f"[{k}/{n}] {r['cell']} {state}{eta}", flush=True)
    if r["returncode"]:
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        print("".join(f"    {line}\n" for line in tail), end="", flush=True)


def launch(
    params: Params,
    jobs: int,
    gpus: list[str] | None = None,
    log_dir: str | Path = "logs/grid",
    overrides: list[str] = (),
    commit: bool = True,
    main: Main | None = None,
) -> list[dict]:
    """Run the out-of-date cells on every slot, then `dvc commit` the ones that succeeded. `main`: bench's
    main function, to run the cells forked from the forkserver (see the module's docstring); as in any
    multiprocessing program, a script that passes it needs an `if __name__ == "__main__":` guard."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = slots(jobs, gpus)
    threads = max(1, (os.cpu_count() or 1) // len(workers))
    if main:  # now, so that the server imports while DVC works out what is stale (idle if nothing is)
        start_forkserver(cell_env(threads))
    dvc("repro", "prepare", capture=False)
    if commit and (gone := forget_cells([c.name for c in cells(params)])):
        named = ", ".join(gone[:3]) + (", ..." if len(gone) > 3 else "")
        print(f"dvc.lock: removed {len(gone)} cells the grid no longer has ({named})", flush=True)
    # deepest (longest) first: the cells left at the end are short, so no worker idles long while one finishes
    todo = sorted(stale_cells(params), key=lambda c: -c.depth)
    print(
        f"{len(todo)} of {len(cells(params))} cells to train, {len(workers)} at a time "
        f"({'GPUs ' + ','.join(sorted(set(workers))) if workers[0] is not None else 'CPU processes'}); "
        f"logs in {log_dir}/",
        flush=True,
    )
    if todo:
        share_wandb_service(params)
    record = commit_cells if commit else None
    results = run_all(todo, workers, log_dir, threads, list(overrides), main, record)
    ok = [r["cell"] for r in results if r["returncode"] == 0]
    failed = [r["cell"] for r in results if r["returncode"]]
    if commit and ok:
        rest = "" if failed else "; the stages after the grid remain (`python -m bench.scale.pipeline`, or `dvc repro`)"
        print(f"recorded {len(ok)} cells in dvc.lock as they finished{rest}")
    if (summary := results_table(params)) is not None:
        print(summary)
    if failed:  # last, so that it is what a user sees where the run stopped
        print(f"{len(failed)} of {len(todo)} cells failed: " + ", ".join(f"{log_dir}/{c}.log" for c in failed))
    return results


def run_all(
    todo: list[Cell],
    workers: list[str | None],
    log_dir: Path,
    threads: int,
    overrides: list[str],
    main: Main | None,
    record: Callable[[list[str]], object] | None = None,
) -> list[dict]:
    """The cells in order, each on the first free worker; a progress line as each ends, and `record(names)` of
    those that succeeded (their `dvc commit`), made by a Recorder while the next cells train, so that a launcher
    killed later loses no finished cell and no worker waits for DVC."""
    results, free, queue = [], list(workers), list(todo)
    running: dict[Cell, float] = {}
    finished: dict[Cell, float] = {}
    recorder = Recorder(record, RECORD_EVERY_S) if record else None
    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            pending = {}
            while queue or pending:
                while queue and free:
                    cell, gpu = queue.pop(0), free.pop(0)
                    running[cell] = time.time()
                    job = pool.submit(run_cell, cell, gpu, log_dir, threads, overrides, main)
                    pending[job] = (cell, gpu)
                done = next(as_completed(pending))
                cell, gpu = pending.pop(done)
                free.append(gpu)
                r = done.result()
                results.append(r)
                del running[cell]
                if r["returncode"] == 0:  # a failed cell's time says nothing about the others'
                    finished[cell] = r["end"] - r["start"]
                    if recorder:
                        recorder.add(cell.name)
                        recorder.check()
                left = time_left(queue, running, finished, len(workers), time.time())
                report(r, len(results), len(todo), log_dir, left)
    finally:
        if recorder:
            recorder.close()
    return results
