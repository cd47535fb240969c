"""`python -m bench.scale.pipeline`: the stages after the grid (lr sweep, toy, studies, report), the independent ones
at once, then recorded in dvc.lock in one rewrite.

`dvc repro` runs one stage at a time and rewrites dvc.lock after each (DVC has no parallel repro, and two `dvc repro`
processes in one workspace contend for its repo lock). After the grid, none of the sweep, the toy and the three
studies reads another's results (the sweep reads the data, the studies the cells and the data, the toy nothing); only
the report reads theirs. Run one after the other, each stage's start-up (imports, a pool of workers) and DVC's lock
rewrite leave a core idle. So, as `bench grid` does for the cells, this runs exactly the commands dvc.yaml declares
outside DVC, `jobs` at a time, a stage once the stages it reads are done, then `dvc commit`s them together: dvc.lock
records them as `dvc repro` would have.

The stages it runs: those `dvc status` finds out of date, where more than cached outputs are missing (as `dvc repro
--allow-missing` decides); those never recorded; those whose results git holds but the workspace lacks (deleted to be
regenerated, bench/scale/restore.py); and every stage downstream of one of them. The train cells and `prepare` are
`bench grid`'s. A stage's outputs are removed before it runs (`persist` ones kept), as DVC does. A failed stage stops
its downstream stages; the others run, and those that succeeded are recorded.

A clone without DVC's cache (nothing to `dvc pull`: the results are in git) lacks the cells' weights, so `dvc status`
finds the folder that holds them, `runs`, modified, and `dvc repro` would rerun every study, which cannot run without
the weights. Where git finds runs/ and dvc.lock as committed and the cells lack only their weights, the studies'
results in git are those of these cells: a stage changed only so is not rerun, and says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import yaml

from bench.progress import duration
from bench.scale.launcher import only_weights_missing
from bench.scale.recorder import commit_stages
from bench.scale.restore import missing_results
from bench.scale.stages import declared, executable

JOBS = 2  # stages at once: each study measures its cells in a pool of its own, one process per core


def reads(stage: dict, other: dict) -> bool:
    """Whether `stage` depends on an output of `other`: a dep that is an output, inside one, or holds one."""
    deps = [str(d) for d in stage.get("deps", [])]
    outs = [path for path, _ in declared(other)]
    return any(d == o or d.startswith(o + "/") or o.startswith(d + "/") for d in deps for o in outs)


def stale(status: dict, stages: dict, weights_missing: bool = False) -> list[str]:
    """The non-matrix stages `dvc status --json` finds out of date for more than missing cached outputs, and, where
    `weights_missing` (committed_but_weights), for more than a modified folder that holds the cells' weights."""
    cells = [out for s in stages.values() if "matrix" in s or "foreach" in s for out, _ in declared(s)]

    def missing_only(name: str, changes: list) -> bool:
        cached = {path for path, options in declared(stages[name]) if options.get("cache", True)}
        holders = {d for d in map(str, stages[name].get("deps", [])) if any(o.startswith(d + "/") for o in cells)}
        for change in changes:
            kind, paths = next(iter(change.items())) if isinstance(change, dict) and len(change) == 1 else (None, {})
            if kind == "changed outs" and all(
                p in cached and v in ("deleted", "not in cache") for p, v in paths.items()
            ):
                continue
            if (
                kind == "changed deps"
                and weights_missing
                and all(p in holders and v == "modified" for p, v in paths.items())
            ):
                continue
            return False
        return True

    return [n for n, changes in status.items() if n in stages and not missing_only(n, changes)]


def committed_but_weights(status: dict) -> bool:
    """Whether the cells lack only their weights (a clone without DVC's cache) and git finds runs/ and dvc.lock as
    committed: then the studies' results in git are those of these cells."""
    cells = {n: c for n, c in status.items() if n.startswith("train@")}
    if not cells or not all(only_weights_missing(c) for c in cells.values()):
        return False
    git = subprocess.run(["git", "status", "--porcelain", "--", "runs", "dvc.lock"], capture_output=True, text=True)
    return git.returncode == 0 and not git.stdout.strip()


def locked(lock: str | Path = "dvc.lock") -> set[str]:
    """The stages dvc.lock records (a stage that never ran has no entry, and `dvc status` shows it only by its
    missing outputs)."""
    text = Path(lock).read_text() if Path(lock).exists() else ""
    return set(re.findall(r"^  (\S+):$", text, re.MULTILINE))


def plan(
    stages: dict, status: dict, missing: list[str], recorded: set[str], weights_missing: bool = False
) -> list[str]:
    """The stages to run, in dvc.yaml's order: those never recorded, the stale and the missing ones, and everything
    downstream of them."""
    names = [n for n, s in stages.items() if "matrix" not in s and "foreach" not in s]
    todo = set(stale(status, stages, weights_missing)) | set(missing) | {n for n in names if n not in recorded}
    grew = True
    while grew:
        more = {n for n in names if n not in todo and any(reads(stages[n], stages[t]) for t in todo)}
        todo |= more
        grew = bool(more)
    return [n for n in names if n in todo]


def waits(stages: dict, todo: list[str]) -> dict[str, set[str]]:
    """For each stage to run, the stages to run whose outputs it reads."""
    return {n: {t for t in todo if t != n and reads(stages[n], stages[t])} for n in todo}


def command(name: str, stage: dict) -> str:
    """The stage's command for the shell (a list of commands runs as DVC runs it, one after the other); a ValueError
    where it uses dvc.yaml's ${...} interpolation, which only DVC resolves."""
    lines = stage["cmd"].splitlines() if isinstance(stage["cmd"], str) else stage["cmd"]
    cmd = " && ".join(line for line in lines if line.strip())
    if "${" in cmd:
        raise ValueError(f"stage {name}'s command uses dvc.yaml's ${{...}} interpolation: run it by `dvc repro {name}`")
    return cmd


def run_stage(name: str, stage: dict, log_dir: Path) -> tuple[int, float]:
    """The stage's command as DVC would run it (by the shell, its outputs removed first); its exit code and time. An
    error around the command (an output that cannot be removed, say) is the stage's failure, said in its log."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    start = time.perf_counter()
    with open(log_dir / f"{name}.log", "w") as log:  # this venv's programs first, as under `make run`
        try:
            for path, options in declared(stage):
                if not options.get("persist") and (p := Path(path)).exists():
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            code = subprocess.run(
                command(name, stage), shell=True, stdout=log, stderr=subprocess.STDOUT, env=env
            ).returncode
        except OSError as e:
            print(f"{name} could not run: {e}", file=log, flush=True)
            code = 1
    return code, time.perf_counter() - start


def run_all(stages: dict, todo: list[str], jobs: int, log_dir: Path) -> tuple[list[str], list[str]]:
    """Each stage once the stages it reads have succeeded, `jobs` at a time, in `todo`'s order; a progress line as
    each ends. (succeeded, failed); a stage downstream of a failed one is neither: it never runs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    wait_for, done, failed, running = waits(stages, todo), [], [], {}
    queue = list(todo)
    with ThreadPoolExecutor(jobs) as pool:
        while queue or running:
            for name in [n for n in queue if wait_for[n] <= set(done)][: jobs - len(running)]:
                queue.remove(name)
                running[pool.submit(run_stage, name, stages[name], log_dir)] = name
            if not running:  # what is left waits on a failed stage
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                code, took = future.result()
                (done if code == 0 else failed).append(name)
                state = "done" if code == 0 else f"FAILED (exit {code}; log: {log_dir / name}.log)"
                print(f"[{len(done) + len(failed)}/{len(todo)}] {name} {state} in {duration(took)}", flush=True)
    return done, failed


def main(jobs: int = JOBS, log_dir: str | Path = "logs/stages") -> int:
    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    r = subprocess.run([*executable("dvc"), "status", "--json"], capture_output=True, text=True)
    if r.returncode:
        print(r.stderr, end="", flush=True)
        return r.returncode
    status = json.loads(r.stdout or "{}")
    cells = [n for n, changes in status.items() if n.startswith("train@") and not only_weights_missing(changes)]
    if cells:  # the studies would read them as they are now, and `dvc repro` would redo both
        print(f"{len(cells)} train cells are out of date ({cells[0]}, ...): run `bench grid` first", flush=True)
        return 1
    missing, recorded, weights_missing = list(missing_results()), locked(), committed_but_weights(status)
    todo = plan(stages, status, missing, recorded, weights_missing)
    if kept := [n for n in plan(stages, status, missing, recorded) if n not in todo]:
        print(f"{', '.join(kept)}: the results in git stand (the cells' weights are in DVC's cache, not in this clone)")
    if upstream := [n for n in todo if any(reads(s, stages[n]) for s in stages.values() if "matrix" in s)]:
        print(f"{', '.join(upstream)} out of date, which the cells read: run `bench grid` first", flush=True)
        return 1
    if not todo:
        return 0
    for name in todo:  # every command checked before any stage runs
        command(name, stages[name])
    print(f"{len(todo)} stages to run, {jobs} at a time: {', '.join(todo)}; logs in {log_dir}/", flush=True)
    done, failed = ([n for n in todo if n in ran] for ran in run_all(stages, todo, jobs, Path(log_dir)))
    if done:
        commit_stages(done)
        print(f"recorded {', '.join(done)} in dvc.lock", flush=True)
    if failed:
        skipped = [n for n in todo if n not in done and n not in failed]
        print(f"failed: {', '.join(failed)}" + (f"; not run: {', '.join(skipped)}" if skipped else ""), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
