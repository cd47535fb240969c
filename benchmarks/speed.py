"""The speed figures of docs/speed.md, step by step, each step's figures saved as soon as it ends.

    python benchmarks/speed.py --device cuda --cifar PATH/cifar10-jpeg.tar.gz     # the GPU check, 480 s
    python benchmarks/speed.py --device cpu [--cifar PATH/cifar10-jpeg.tar.gz]    # the CPU figures (make perf)
    python benchmarks/speed.py --device cuda --steps grid depths --cifar ...      # only these steps, in this order
    python benchmarks/speed.py --device cuda --dry-run --cifar ...                # every step on the CPU, briefly

Steps of --device cuda, the most telling first:
  sync     the no-host-sync test (pytest -m gpu tests/test_perf.py)
  perf56   `bench perf`, residual_bn-56, batch 128: eager fp32; eager bf16 + channels_last; compiled
           (reduce-overhead: CUDA graphs) bf16 + channels_last, then a torch.profiler table of it
  same     the same in eager fp32 on deterministic kernels, 30 steps: the two paths' losses must be equal
  he20     ResNet-20 residual_bn through He et al.'s protocol (presets/he2016.yaml, then presets/fast.yaml)
           by `bench train`, on CIFAR-10 in the official layout (cifar10_official.py from --cifar): 64,000
           iterations, or as many as the budget left allows, the lr steps at the same fractions
  grid     1, 2 and 4 ResNet-20 cells at once through `bench grid`, in a copy of the pipeline: images/s in all
  depths   `bench perf` at depths 20 and 110, compiled and eager bf16
Steps of --device cpu:
  cifar20  `bench perf`, residual_bn-20 on synthetic CIFAR-10-sized images: He et al.'s step
  digits   `bench perf` at depths 8, 20 and 56 on the 8x8 digits, where a framework's cost per step shows
  prepare  `bench prepare` of --cifar: wall time and peak memory
  repro    `dvc repro` from scratch in a clone of HEAD (about 5 minutes): wall time and peak memory

Results in --out (default perf/DEVICE, perf/DEVICE-dry-run for a dry run): summary.json (each step's
figures), summary.txt (a line per figure), versions.txt, and each measure's JSON and log. Where $OUT is
set, --out is packed into $OUT/NAME.tar.gz after every step, so that a run cut off still returns what it
measured. --budget skips what would not fit; every command runs in a process group of its own, stopped
as a whole at its time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import config  # noqa: E402

BENCH = [sys.executable, "-m", "bench"]
HE, FAST = ROOT / "presets/he2016.yaml", ROOT / "presets/fast.yaml"  # He et al.'s protocol; the fast path
LIGHTNING = "2.6.6"  # pyproject.toml's pin: 2.6.2 and 2.6.3 on PyPI were malicious
GPU_STEPS = ["sync", "perf56", "same", "he20", "grid", "depths"]
CPU_STEPS = ["cifar20", "digits", "prepare", "repro"]
GPU_BUDGET_S = 480  # --device cuda's default budget: a device machine's time, less its start-up; none otherwise
GRACE_S = 15  # between SIGTERM (which Lightning traps) and SIGKILL
POLL_S = 0.2  # how often a running command is checked on
SYNC_LIMIT_S = 150  # the no-host-sync test at most
PERF_LIMIT_S = 240  # one `bench perf` run on a GPU at most: a compilation that hangs leaves time for the rest
PERF_NEED_S, COMPILED_NEED_S = 60, 150  # budget left to start an eager, a compiled `bench perf` run
# bench perf's (timed steps, warm-up steps, repeats); a dry run's are 4 after 2, twice
TIMING = {"gpu": (200, 30, 2), "same": (30, 5, 1), "cifar20": (20, 3, 5), "digits": (100, 10, 9), "dry": (4, 2, 2)}
BATCH = 128  # He et al.'s
HE_ITERATIONS = 64_000  # He et al.'s protocol
# he20's time, as measured on an H200 (perf/gpu/): 74 s of start-up, compilation, the final test and the
# diagnostics, then ResNet-20's steps with the test set scored every epoch at 1.24 times ResNet-56's compiled
# images/s in `bench perf` (15,279 against 12,329), the bare steps alone at 2.7 times (32,979)
HE_SETUP_S = 100
HE_OVER_56 = 1.2
HE_MARGIN = 0.8  # of the iterations the time left would fit at the estimated speed
HE_DEFAULT_IMAGES_PER_S = 12_000  # ResNet-56's compiled, where perf56 has not measured it (an H200's: 12,329)
HE_MIN_ITERATIONS = 1_000  # fewer: no figure worth the time
GRID_CELLS = (1, 2, 4)  # cells at once
GRID_NEED_S = 200  # budget left to start one of them: on an H200 a grid of 1 or 2 cells took 149 to 165 s
GRID_ITERATIONS = 1_000  # each cell's
DRY = {"he_iters": 30, "grid_iters": 20, "compile": "default", "val_size": 100}  # a dry run's defaults
CIFAR_VAL_SIZE = 5_000  # the prepare step's validation split (He et al.'s)
ARCHIVE_MAX_BYTES = 15_000_000  # a device machine returns files up to 16 MB: over this, the Chrome traces stay behind
# what a copy of the pipeline holds: `bench grid` runs in one
PIPELINE = ("bench", "presets", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "dvc.yaml", "params.yaml")
CPU_THREADS = os.cpu_count()  # the CPU steps' speed.threads: every core, as perf/cpu's figures were measured
DIGITS = ["data.name=digits", "data.source=null", "data.md5=null", "data.val_size=144"]


@dataclass
class Run:
    """What every step reads: where it runs, the time left, its options, and where results go."""

    device: str  # cpu or cuda: where the steps run (cpu on a dry run)
    dry: bool
    out: Path
    work: Path  # scratch, removed at the end
    budget_s: float
    cifar: Path | None  # CIFAR-10 as a JPEG ImageFolder
    compile: str  # the fast path's speed.compile
    he_iters: int | None
    grid_iters: int
    env: dict
    start: float = field(default_factory=time.monotonic)
    figures: dict = field(default_factory=dict)  # step -> its figures: summary.json
    official: dict | None = None  # CIFAR-10 in the official layout, once built (or why not)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def say(self, line: str) -> None:
        line = line.replace(f"{ROOT}{os.sep}", "")  # the project's paths as the repository names them
        print(line, flush=True)
        with open(self.out / "summary.txt", "a") as f:
            f.write(line + "\n")

    def save(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.figures, indent=1) + "\n")

    def pack(self) -> None:
        """--out as $OUT/NAME.tar.gz, written aside then renamed: never a half-written archive."""
        if not os.environ.get("OUT"):
            return
        archive = Path(os.environ["OUT"]) / f"{self.out.name}.tar.gz"
        part = archive.with_name(f"{archive.name}.{os.getpid()}.part")
        for keep in (None, without_traces):
            with tarfile.open(part, "w:gz", compresslevel=6) as tar:
                tar.add(self.out, self.out.name, filter=keep)
            if part.stat().st_size <= ARCHIVE_MAX_BYTES:
                break
        part.replace(archive)


def without_traces(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if member.name.endswith(".trace.json") else member


# --- commands: a process group each, a time limit, wall time and peak memory ---


def call(cmd: list, log: Path, limit_s: float, env: dict, cwd: Path = ROOT) -> dict:
    """Run `cmd`, its output in `log`, in a process group of its own; past `limit_s` the group is stopped and
    the exit status is 124, as timeout(1) says. Its exit status, wall time and peak resident memory."""
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [str(c) for c in cmd], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        status, usage = wait(proc.pid, start + limit_s)
        code = 124 if status is None else os.waitstatus_to_exitcode(status)
        if status is None:
            status, usage = stop(proc.pid)
    except BaseException:  # interrupted: the command's processes end too
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            stop(proc.pid)
        raise
    proc.returncode = code  # reaped by wait4, for its peak memory
    return {
        "exit": code,
        "wall_s": round(time.monotonic() - start, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
    }


def wait(pid: int, deadline: float) -> tuple:
    """(wait status, rusage) of `pid` once it ends, or (None, None) at `deadline`."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(POLL_S)


def stop(pid: int) -> tuple:
    """SIGTERM to the process group `pid` leads, SIGKILL to what is left of it GRACE_S later."""
    os.killpg(pid, signal.SIGTERM)
    status, usage = wait(pid, time.monotonic() + GRACE_S)
    with contextlib.suppress(ProcessLookupError):  # the leader's children too, where it went first
        os.killpg(pid, signal.SIGKILL)
    if status is None:
        _, status, usage = os.wait4(pid, 0)
    return status, usage


def tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def environment(work: Path, site: Path | None = None) -> dict:
    """The commands' environment: on PATH first, `bench` and `dvc` as this Python (dvc's stages call `bench`); on
    PYTHONPATH first, `site` (installed wheels) and the project."""
    tools = work / "bin"
    for tool in ("bench", "dvc"):
        (tools / tool).parent.mkdir(exist_ok=True)
        (tools / tool).write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {tool} "$@"\n')
        (tools / tool).chmod(0o755)
    paths = [*([str(site)] if site else []), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONUNBUFFERED": "1",
        "DVC_NO_ANALYTICS": "1",
    }


# --- overrides ---


def fast_path(run: Run) -> list[str]:
    """presets/fast.yaml, with this run's precision and compile mode (fp32 on the CPU, where bf16 is slow)."""
    precision = "bf16-mixed" if run.device == "cuda" else "32-true"
    return [*config.preset(FAST), f"trainer.precision={precision}", f"speed.compile={run.compile}"]


def he_fast(run: Run, source: str, md5: str, iterations: int) -> list[str]:
    """He et al.'s preset on the fast path, on the archive at `source`, cut to `iterations` with the lr steps at
    the same fractions (one word each: no spaces)."""
    return [
        *config.preset(HE),
        *fast_path(run),
        f"data.source={source}",
        f"data.md5={md5}",
        f"trainer.accelerator={'gpu' if run.device == 'cuda' else 'cpu'}",
        f"train.max_steps={iterations}",
        f"train.milestones=[{iterations // 2},{iterations * 3 // 4}]",
        "wandb.mode=disabled",
    ]


# --- the steps shared by both devices' lists: bench perf, the official CIFAR-10 ---


def bench_perf(
    run: Run, name: str, args: list[str], timing: str, compiled: bool = False, profile: bool = False
) -> dict:
    """One `bench perf` run: NAME.json and NAME.log in --out, its figures, a summary line. `timing`: TIMING's key."""
    need = COMPILED_NEED_S if compiled and run.compile != "null" else PERF_NEED_S
    if run.left() < need:
        run.say(f"{name}: skipped, under {need} s of the {run.budget_s:.0f} s budget left")
        return {"skipped": f"under {need} s left"}
    steps, warmup, repeats = TIMING["dry" if run.dry else timing]
    result, log = run.out / f"{name}.json", run.out / f"{name}.log"
    cmd = [*BENCH, "perf", "--device", run.device, "--steps", steps, "--warmup", warmup, "--repeats", repeats]
    cmd += ["--out", result, *args, *(["--profile", run.out / f"profile-{name}"] if profile else [])]
    limit = min(run.left(), PERF_LIMIT_S) if run.device == "cuda" else run.left()
    code = call(cmd, log, limit, run.env)["exit"]
    figures = {"exit": code}
    if result.exists():  # written before a profile, which may fail on its own
        p = json.loads(result.read_text())
        keys = ("variant", "depth", "batch", "data", "hardware", "lightning_overhead_pct")
        keys += ("lightning_overhead_pct_range", "lightning_overhead_ms", "max_loss_difference")
        figures.update({k: p[k] for k in keys})
        figures.update(bench_images_per_s=p["bench"]["images_per_s"], bare_images_per_s=p["bare"]["images_per_s"])
        run.say(
            f"{name} ({time.monotonic() - run.start:.0f} s): bench {figures['bench_images_per_s']} images/s, bare loop "
            f"{figures['bare_images_per_s']}; Lightning overhead {p['lightning_overhead_pct']} % "
            f"{p['lightning_overhead_pct_range']}, {p['lightning_overhead_ms']} ms a step; "
            f"max loss difference {p['max_loss_difference']}"
        )
    if code:
        run.say(f"{name}: exit {code} (124: cut off at {limit:.0f} s); the end of {log}:\n{tail(log)}")
    if "skipping cudagraphs" in log.read_text(errors="replace"):
        run.say(f"{name}: fell back from CUDA graphs (see its log)")
        figures["cudagraphs"] = False
    run.pack()
    return figures


def official(run: Run) -> dict:
    """CIFAR-10 in the official layout from --cifar, prepared by `bench prepare` with its md5: built once,
    {archive, md5, prepared} or {error}."""
    if run.official is None:
        run.official = build_official(run)
        if "error" in run.official:
            run.say(f"CIFAR-10 steps skipped: {run.official['error']}")
        else:
            run.say(f"CIFAR-10 in the official layout from {run.cifar}: md5 {run.official['md5']}")
    return run.official


def build_official(run: Run) -> dict:
    """cifar10_official.py's archive from --cifar, then `bench prepare data.name=cifar10` of it with its md5."""
    if run.cifar is None or not run.cifar.exists():
        return {"error": f"no CIFAR-10 JPEG copy at {run.cifar}" if run.cifar else "no --cifar"}
    archive, prepared = run.work / "cifar-10-python.tar.gz", run.work / "cifar10"
    log = run.out / "cifar10-official.log"
    convert = [sys.executable, ROOT / "benchmarks/cifar10_official.py", run.cifar, archive]
    if call(convert, log, max(60, run.left()), run.env)["exit"]:
        return {"error": f"its conversion failed ({log}: {tail(log, 1)})"}
    md5 = tail(log, 1).strip()  # the converter's last line
    if len(md5) != 32:
        return {"error": f"its conversion printed no md5 ({log})"}
    args = ["data.name=cifar10", f"data.source={archive}", f"data.md5={md5}", "data.val_size=0"]
    log = run.out / "cifar10-prepare.log"
    if call([*BENCH, "prepare", "--out", prepared, *args], log, max(60, run.left()), run.env)["exit"]:
        return {"error": f"its preparation failed ({log}: {tail(log, 1)})"}
    return {"archive": str(archive), "md5": md5, "prepared": str(prepared)}


def pipeline_copy(run: Run, folder: Path, archive: str) -> Path:
    """The pipeline (bench, presets, dvc.yaml, params.yaml) in `folder`, a git repository of its own (DVC with
    no_scm where there is no git), with `archive` as its data/raw/cifar-10-python.tar.gz."""
    for name in PIPELINE:
        source, copy = ROOT / name, folder / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy)
    if shutil.which("git"):
        git = ["git", "-C", folder, "-c", "user.name=speed", "-c", "user.email=speed@localhost"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the pipeline"]):
            subprocess.run([*git, *args], check=True, env=run.env)
    else:  # DVC without git
        dvc_config = folder / ".dvc/config"
        dvc_config.write_text(dvc_config.read_text().replace("[core]\n", "[core]\n    no_scm = true\n", 1))
    (folder / "data/raw").mkdir(parents=True)  # after the commit: the data are DVC's, not git's
    shutil.copy(archive, folder / "data/raw/cifar-10-python.tar.gz")
    return folder


def in_copy(run: Run, folder: Path) -> dict:
    """The environment of a command in a copy of the pipeline: its code first."""
    return {**run.env, "PYTHONPATH": f"{folder}{os.pathsep}{run.env['PYTHONPATH']}"}


def set_params(folder: Path, overrides: list[str]) -> None:
    """The copy's params.yaml with `overrides` applied: what its `bench grid` or `dvc repro` runs."""
    params = folder / "params.yaml"
    raw = config.apply_overrides(yaml.safe_load(params.read_text()), overrides)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))


# --- the GPU steps ---


def step_sync(run: Run) -> dict:
    """The no-host-sync test: a training step on the GPU that reads anything back fails it."""
    if run.device != "cuda":
        print("sync: skipped on the CPU (it needs CUDA)", flush=True)
        return {"skipped": "it needs CUDA"}
    log = run.out / "sync-test.txt"
    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_perf.py"]
    code = call(pytest, log, SYNC_LIMIT_S, run.env)["exit"]
    run.say(f"sync test: exit {code} ({tail(log, 1)})")
    return {"exit": code, "result": tail(log, 1)}


def step_perf56(run: Run) -> dict:
    """ResNet-56 three ways: eager fp32; eager bf16 + channels_last; the whole fast path, then its profile."""
    fast = ["--variant", "residual_bn", "--depth", "56", "--batch", str(BATCH), *fast_path(run)]
    fp32 = [*fast, "--precision", "32-true", "speed.channels_last=false", "speed.compile=null"]
    return {
        "eager-fp32-56": bench_perf(run, "eager-fp32-56", fp32, "gpu"),
        "eager-bf16-56": bench_perf(run, "eager-bf16-56", [*fast, "speed.compile=null"], "gpu"),
        "compiled-bf16-56": bench_perf(run, "compiled-bf16-56", fast, "gpu", compiled=True, profile=True),
    }


def step_same(run: Run) -> dict:
    """The real path and the bare loop take the same steps: eager fp32 with deterministic kernels, whose losses
    must be equal. On the fast path's nondeterministic cuDNN kernels, an H200's fp32 losses parted by 0.33 over
    230 steps while bf16's stayed equal (perf/gpu/eager-fp32-56.json); this tells a kernel's rounding from a bug."""
    fast = ["--variant", "residual_bn", "--depth", "56", "--batch", str(BATCH), *fast_path(run)]
    exact = [*fast, "--precision", "32-true", "speed.channels_last=false", "speed.compile=null"]
    exact += ["trainer.deterministic=true", "trainer.benchmark=false"]
    return {"deterministic-fp32-56": bench_perf(run, "deterministic-fp32-56", exact, "same")}


def he_iterations(run: Run) -> int:
    """64,000, or what fits the time left less HE_SETUP_S, at HE_OVER_56 times ResNet-56's compiled images/s
    (perf56's) and a margin of HE_MARGIN, in hundreds."""
    measured = run.out / "compiled-bf16-56.json"
    ips = json.loads(measured.read_text())["bench"]["images_per_s"] if measured.exists() else HE_DEFAULT_IMAGES_PER_S
    fits = HE_MARGIN * (run.left() - HE_SETUP_S) * HE_OVER_56 * ips / BATCH
    return int(min(HE_ITERATIONS, fits)) // 100 * 100


def step_he20(run: Run) -> dict:
    """ResNet-20 through He et al.'s protocol on the fast path, cut to what the budget fits; a run cut off is
    reported from the last row of its history.csv."""
    data = official(run)
    if "error" in data:
        return {"skipped": data["error"]}
    iterations = run.he_iters or he_iterations(run)
    if iterations < HE_MIN_ITERATIONS and not run.dry:
        run.say(f"he20: skipped, {run.left():.0f} s left fit only {iterations} iterations")
        return {"skipped": f"only {iterations} iterations fit"}
    out, log = run.out / "he2016-resnet20", run.out / "he2016-resnet20.log"
    cell = ["--variant", "residual_bn", "--depth", "20", "--seed", "0", "--data", data["prepared"], "--out", out]
    overrides = he_fast(run, data["archive"], data["md5"], iterations)
    r = call([*BENCH, "train", *cell, "--no-progress", *overrides], log, max(30, run.left()), run.env)
    (out / "last.ckpt").unlink(missing_ok=True)
    protocol = (
        f"He et al.'s protocol cut to {iterations} of {HE_ITERATIONS:,} iterations, the lr steps at the same fractions"
    )
    protocol = "the whole protocol" if iterations == HE_ITERATIONS else protocol
    figures = {"exit": r["exit"], "wall_s": r["wall_s"], "iterations": iterations}
    if (out / "metrics.json").exists():
        m = json.loads((out / "metrics.json").read_text())
        figures.update({k: m[k] for k in ("test/error", "train/error", "images_per_s", "wall_time_s")})
        said = ", ".join(f"{k} {m[k]}" for k in ("test/error", "train/error", "images_per_s", "wall_time_s"))
    else:  # cut off: how far it got, and the last test error scored at an epoch's end
        history = out / "history.csv"
        rows = list(csv.DictReader(history.read_text().splitlines())) if history.exists() else []
        tested = [row for row in rows if row.get("test/error")]
        figures["last_history_row"] = rows[-1] if rows else None
        figures["last_tested_row"] = tested[-1] if tested else None
        last = f"step {rows[-1]['step']}" if rows else "no step"
        scored = f"; test error {tested[-1]['test/error']} at step {tested[-1]['step']}" if tested else ""
        said = f"no metrics.json; history.csv: {last}{scored}"
    run.say(f"he20 ResNet-20 residual_bn, {protocol}: exit {r['exit']}, {r['wall_s']:.0f} s wall; {said}")
    return figures


def step_grid(run: Run) -> dict:
    """1, 2 and 4 ResNet-20 cells (seeds) at once through `bench grid`, --grid-iters iterations each on He et al.'s
    fast path. The aggregate is the sum of the cells' own training images/s (each measured while the others
    ran), and all their images over the grid's wall time, start-up and compilation included."""
    data = official(run)
    if "error" in data:
        return {"skipped": data["error"]}
    if subprocess.run([sys.executable, "-c", "import dvc"], env=run.env, capture_output=True).returncode:
        run.say("grid: skipped, no dvc")
        return {"skipped": "no dvc"}
    copy = pipeline_copy(run, run.work / "grid", data["archive"])
    return {f"x{k}": grid_cells(run, copy, k, data["md5"]) for k in GRID_CELLS}


def grid_cells(run: Run, copy: Path, k: int, md5: str) -> dict:
    """`k` cells at once through `bench grid` in the pipeline copy: their figures, each cell's metrics.json kept."""
    if run.left() < GRID_NEED_S:
        run.say(f"grid x{k}: skipped, under {GRID_NEED_S} s of the {run.budget_s:.0f} s budget left")
        return {"skipped": f"under {GRID_NEED_S} s left"}
    for scratch in ("runs", "logs"):
        shutil.rmtree(copy / scratch, ignore_errors=True)
    seeds = ",".join(map(str, range(k)))
    cells = ["grid.variants=[residual_bn]", "grid.depths=[20]", f"grid.seeds=[{seeds}]"]
    set_params(copy, [*he_fast(run, "data/raw/cifar-10-python.tar.gz", md5, run.grid_iters), *cells])
    log = run.out / f"grid-x{k}.log"
    r = call([*BENCH, "grid", "--jobs", k], log, run.left(), in_copy(run, copy), cwd=copy)
    kept = run.out / f"grid-x{k}"  # each cell's metrics.json, named by its cell
    kept.mkdir(exist_ok=True)
    for m in copy.glob("runs/*/metrics.json"):
        shutil.copy(m, kept / f"{m.parent.name}.json")
    for cell_log in copy.glob("logs/grid/*.log"):  # where a cell's wall time went, and why one failed
        shutil.copy(cell_log, kept / cell_log.name)
    metrics = [json.loads(f.read_text()) for f in sorted(kept.glob("*.json"))]
    own = [m["images_per_s"] for m in metrics if m["images_per_s"] is not None]  # None: no step past the warm-up
    figures = {
        "exit": r["exit"],
        "cells": len(metrics),
        "images_per_s": round(sum(own)) if metrics and len(own) == len(metrics) else None,
        "images_per_s_over_wall": round(sum(m["steps"] * BATCH for m in metrics) / max(1, r["wall_s"])),
        "wall_s": r["wall_s"],
        "test_errors": [m["test/error"] for m in metrics],
    }
    run.say(
        f"grid x{k}: exit {r['exit']}, {len(metrics)} of {k} cells; aggregate {figures['images_per_s']} images/s (the "
        f"cells' own, summed), {figures['images_per_s_over_wall']} over the {r['wall_s']:.0f} s wall (start-up and "
        f"compilation included); test errors {', '.join(f'{e:.4f}' for e in figures['test_errors'])}"
    )
    if r["exit"]:
        run.say(tail(log))
    run.pack()
    return figures


def step_depths(run: Run) -> dict:
    """The fast path, compiled and eager, at depths 20 and 110: how the speed scales with depth."""
    figures = {}
    for depth in (20, 110):
        fast = ["--variant", "residual_bn", "--depth", str(depth), "--batch", str(BATCH), *fast_path(run)]
        figures[f"compiled-bf16-{depth}"] = bench_perf(run, f"compiled-bf16-{depth}", fast, "gpu", compiled=True)
        figures[f"eager-bf16-{depth}"] = bench_perf(run, f"eager-bf16-{depth}", [*fast, "speed.compile=null"], "gpu")
    return figures


# --- the CPU steps ---


def step_cifar20(run: Run) -> dict:
    """params.yaml's own path (fp32, deterministic) on every core, on synthetic 32x32 RGB images: He et al.'s step."""
    args = ["--variant", "residual_bn", "--depth", "20", "--batch", str(BATCH), f"speed.threads={CPU_THREADS}"]
    return {"cifar_shape_20": bench_perf(run, "cifar_shape_20", args, "cifar20")}


def step_digits(run: Run) -> dict:
    """The default ablation's 8x8 digits: steps of 10-60 ms, where a framework's per-step cost shows."""
    digits = run.work / "digits"
    log = run.out / "digits-prepare.log"
    if not digits.exists() and call([*BENCH, "prepare", "--out", digits, *DIGITS], log, run.left(), run.env)["exit"]:
        run.say(f"digits: bench prepare failed: {tail(log)}")
        return {"skipped": "bench prepare failed"}
    figures = {}
    for depth in (8, 20, 56):
        cell = ["--variant", "residual_bn", "--depth", str(depth), "--data", digits]
        args = [*cell, *DIGITS, f"speed.threads={CPU_THREADS}"]
        figures[f"digits_{depth}"] = bench_perf(run, f"digits_{depth}", args, "digits")
    return figures


def step_prepare(run: Run) -> dict:
    """`bench prepare` of the CIFAR-10 JPEG copy: its wall time and peak memory."""
    if run.cifar is None:
        print("prepare: skipped, no --cifar", flush=True)
        return {"skipped": "no --cifar"}
    val = DRY["val_size"] if run.dry else CIFAR_VAL_SIZE
    args = ["data.name=imagefolder", f"data.source={run.cifar.resolve()}", "data.md5=null", f"data.val_size={val}"]
    log = run.out / "prepare-cifar10.log"
    r = call([*BENCH, "prepare", "--out", run.work / "cifar10-jpeg", *args], log, run.left(), run.env)
    run.say(f"bench prepare of {run.cifar}: exit {r['exit']}, {r['wall_s']} s, {r['peak_rss_gb']} GB peak memory")
    return r


def step_repro(run: Run) -> dict:
    """`dvc repro` from scratch in a clone of HEAD; on a dry run, of one depth-8 cell and a small sweep and toy."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        print("repro: skipped, no git repository to clone", flush=True)
        return {"skipped": "no git repository"}
    clone = run.work / "clone"
    subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
    if run.dry:
        small = ["grid.variants=[residual_bn]", "grid.depths=[8]", "grid.seeds=[0]", "train.max_steps=10"]
        small += ["train.milestones=[5,8]", "lr_sweep.lrs=[0.1]", "lr_sweep.max_steps=10", "toy.depths=[1,2]"]
        set_params(clone, [*small, "toy.seeds=1", "wandb.mode=disabled"])
    r = call([sys.executable, "-m", "dvc", "repro"], run.out / "repro.log", run.left(), in_copy(run, clone), cwd=clone)
    memory = f"{r['wall_s']} s, {r['peak_rss_gb']} GB peak memory"
    run.say(f"dvc repro from scratch (a clone of HEAD): exit {r['exit']}, {memory}")
    return r


STEPS = {
    "sync": step_sync,
    "perf56": step_perf56,
    "same": step_same,
    "he20": step_he20,
    "grid": step_grid,
    "depths": step_depths,
    "cifar20": step_cifar20,
    "digits": step_digits,
    "prepare": step_prepare,
    "repro": step_repro,
}


# --- before the steps: wheels where asked, the versions ---


def versions(run: Run) -> dict:
    """The card, the versions, the commit, and the lightning pyproject.toml pins, exactly: else no step runs."""
    code = """import json, sys, torch, lightning, torchmetrics
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(), "lightning": lightning.__version__, "lightning_at": lightning.__file__,
    "torchmetrics": torchmetrics.__version__}))"""
    r = subprocess.run([sys.executable, "-c", code], env=run.env, capture_output=True, text=True)
    if r.returncode:
        run.say(f"versions: {r.stderr.strip().splitlines()[-1]}: stopping")
        raise SystemExit(1)
    found = json.loads(r.stdout)
    smi = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    found["gpu"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip() if shutil.which(smi[0]) else None
    head = ["git", "-C", ROOT, "rev-parse", "HEAD"]
    head = subprocess.run(head, capture_output=True, text=True) if shutil.which("git") else None
    found["commit"] = head.stdout.strip() if head and head.returncode == 0 else None  # None: no git, or no .git
    (run.out / "versions.txt").write_text(json.dumps(found, indent=1) + "\n")
    if found["lightning"] != LIGHTNING:
        run.say(f"lightning {found['lightning']}, not {LIGHTNING}: stopping (--wheels DIR installs it)")
        raise SystemExit(1)
    return found


def install_wheels(run: Run, wheels: Path) -> None:
    """The wheels of `wheels` this Python lacks (dev/offline_wheels.py), installed in the scratch folder, which goes
    first on the commands' PYTHONPATH."""
    site = run.work / "site"
    tool = [sys.executable, ROOT / "dev/offline_wheels.py", "--out", wheels, "--install", site]
    r = call(tool, run.out / "wheels.log", run.left(), run.env)
    installed = tail(run.out / "wheels.log", 1).split(" into ")[0]  # the wheels' names: in wheels.log
    run.say(f"wheels from {wheels}: exit {r['exit']}; {installed}")
    run.env = environment(run.work, site)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", required=True, choices=("cpu", "cuda"), help="whose steps, and where they run")
    ap.add_argument("--steps", nargs="+", choices=list(STEPS), metavar="STEP", help="these, in this order")
    ap.add_argument("--budget", type=float, help=f"seconds for all steps (default: {GPU_BUDGET_S} on cuda, else none)")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU, a few iterations each")
    ap.add_argument("--out", type=Path, help="the results folder (default: perf/DEVICE, perf/DEVICE-dry-run)")
    ap.add_argument(
        "--cifar", type=Path, help="CIFAR-10 as a JPEG ImageFolder (a folder or tar.gz): prepare, he20, grid"
    )
    ap.add_argument(
        "--compile", help="the fast path's speed.compile (default: reduce-overhead; a dry run's default; null)"
    )
    ap.add_argument("--he-iters", type=int, help="he20's iterations (default: 64,000 or what the budget fits; 30 dry)")
    ap.add_argument("--grid-iters", type=int, help=f"each grid cell's iterations (default: {GRID_ITERATIONS}; 20 dry)")
    ap.add_argument("--wheels", type=Path, help="first install the wheels this Python lacks from this wheelhouse")
    a = ap.parse_args(argv)
    a.steps = a.steps or (GPU_STEPS if a.device == "cuda" else CPU_STEPS)
    a.out = (a.out or ROOT / "perf" / (f"{a.device}-dry-run" if a.dry_run else a.device)).resolve()
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that what was measured is still packed
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.txt").write_text("")
    with tempfile.TemporaryDirectory(prefix="speed-") as work:
        run = Run(
            device="cpu" if a.dry_run else a.device,
            dry=a.dry_run,
            out=a.out,
            work=Path(work),
            budget_s=a.budget or (GPU_BUDGET_S if a.device == "cuda" and not a.dry_run else math.inf),
            cifar=a.cifar.resolve() if a.cifar else None,
            compile=a.compile or (DRY["compile"] if a.dry_run else "reduce-overhead"),
            he_iters=a.he_iters or (DRY["he_iters"] if a.dry_run else None),
            grid_iters=a.grid_iters or (DRY["grid_iters"] if a.dry_run else GRID_ITERATIONS),
            env=environment(Path(work)),
        )
        try:
            if a.wheels:
                install_wheels(run, a.wheels.resolve())
            run.figures["versions"] = versions(run)
            for name in a.steps:
                try:
                    run.figures[name] = STEPS[name](run)
                except Exception as e:  # a step's own failure: the next steps still run
                    traceback.print_exc()
                    run.say(f"{name}: failed: {type(e).__name__}: {e}")
                    run.figures[name] = {"error": f"{type(e).__name__}: {e}"}
                run.save()
                run.pack()
            run.say(f"done in {time.monotonic() - run.start:.0f} s")
        finally:
            run.save()
            run.pack()


if __name__ == "__main__":
    main()
