"""`bench slurm`: sbatch scripts for the grid on a SLURM cluster, preemption-safe.

grid.sbatch: a job array of the out-of-date cells (launcher.stale_cells, as `bench grid`; --all: every cell), each the
train stage's command on the resources `trainer` asks for (nodes, a task per device, a GPU per task unless the cells
run on the CPU). commit.sbatch, after it (afterok), on one task and no GPU (one for trainer.accelerator gpu: its lr
sweep trains): the cells recorded in dvc.lock, then the stages that remain. submit.sh submits both; ddp_cell.sbatch
trains one cell with DDP. Each job asks for SIGUSR1 90 s before its time limit: Lightning saves a requeue checkpoint
and requeues the job, which resumes from it if it is the same run's (bench/train/resume.py). Options take submitit's
names (setup, mem, qos, constraint, gpus_per_task; --sbatch for others), all checked before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import config
from bench.config import Params
from bench.record import Cell, cells
from bench.scale.stages import stage_template, substitute

HEADER = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --time={time}
#SBATCH --signal=SIGUSR1@{signal}
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={logs}/%x-%A{array}.out
{extra}"""
SIGNAL_S = 90  # SIGUSR1 this long before the time limit: Lightning's requeue checkpoint
TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d{1,2}))?(?::(?P<c>\d{1,2}))?")
MEM = re.compile(r"[1-9]\d*(?:[KMGTkmgt][Bb]?)?")  # sbatch's sizes: megabytes unless K, M, G or T
WORD = re.compile(r"[^\s'\"\\]+")  # one word on an #SBATCH line
KEY = re.compile(r"[a-z][a-z0-9]+(?:-[a-z0-9]+)*")  # a long sbatch option without its dashes
OWN = {k: f"--{k}" for k in ("time", "partition", "account", "qos", "mem", "constraint")} | {
    "cpus-per-task": "--cpus-per-gpu"
}
OWN |= dict.fromkeys(("gres", "gpus", "gpus-per-task", "gpus-per-node"), "--gpus-per-task")
MACHINERY = {"job-name", "signal", "requeue", "open-mode", "output", "array", "nodes", "ntasks-per-node", "dependency"}
SETUP = """set -euo pipefail
cd {root}
set +u  # activation scripts and module files may read unset variables
{lines}set -u
"""
HIDE = "export CUDA_VISIBLE_DEVICES=  # no GPU asked for: trainer.accelerator auto runs on the CPU\n"
GRID = """#SBATCH --array=0-{last}%{parallel}
{job}CELLS=({names})
VARIANTS=({variants})
DEPTHS=({depths})
SEEDS=({seeds})
i=$SLURM_ARRAY_TASK_ID
echo "cell ${{CELLS[$i]}} (task $i of {n})"
# the train stage's command (dvc.yaml); srun starts one task per device, which Lightning detects
srun {command} --no-progress
"""
COMMIT = """{job}dvc commit --force {stages}
dvc repro  # the stages that remain: the lr sweep (it trains, on this job's device), toy, report
"""
DDP = """{job}# usage: sbatch ddp_cell.sbatch VARIANT DEPTH SEED
# trainer.devices, trainer.num_nodes and trainer.strategy (ddp) come from params.yaml, as do the
# #SBATCH lines above: one task per device, and train.batch_size is the global batch across them all
V=$1 D=$2 S=$3
srun {command} --no-progress
dvc commit --force "train@$V-$D-$S"
"""
SUBMIT = """#!/bin/bash
# Submit the grid as a job array, then the commit job once every cell has succeeded.
here=$(cd "$(dirname "$0")" && pwd)
{setup}dvc repro prepare  # on the login node: verifies and prepares the data once
{check}jid=$(sbatch --parsable "$here/grid.sbatch")
sbatch --dependency=afterok:${{jid}} "$here/commit.sbatch"
echo "submitted job array ${{jid}} ({n} cells) and its commit job; logs in {logs}"
"""
CHECK = """stale=$(bench grid --dry-run | sed -n 1p)  # the cells out of date now that prepare has run: in the array?
for c in ${{stale#*: }}; do [[ $c == none || " {names} " == *" $c "* ]] || {{ echo "$c: out of date, not in the \
job array (params or data changed since bench slurm wrote it): run bench slurm again" >&2; exit 1; }}; done
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`bench slurm`'s options, for bench/cli.py's parser: sbatch's and submitit's names where they have one."""
    add, many = p.add_argument, {"action": "append"}
    only = "only trainer.accelerator, as cpu or gpu where params.yaml says auto: the GPUs the scripts ask for"
    add("overrides", nargs="*", metavar="OVERRIDE", help=only + " (the cells run params.yaml)")
    add("--out", default="slurm", help="folder for the scripts (default: slurm)")
    add("--root", default=None, help="the checkout's path on the cluster (default: this one)")
    add("--all", action="store_true", help="every cell in the array (default: the out-of-date ones, as bench grid)")
    time = "time limit per job: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (default: 24:00:00)"
    add("--time", default="24:00:00", help=time)
    add("--partition", help="#SBATCH --partition (default: the cluster's)")
    add("--account", help="#SBATCH --account (default: the cluster's)")
    add("--qos", help="#SBATCH --qos, the quality of service (default: the cluster's)")
    add("--mem", help="#SBATCH --mem, memory per node: 16G, 4000M (default: the cluster's)")
    add("--constraint", help="#SBATCH --constraint, node features: a100, 'a100|h100' (default: none)")
    add("--sbatch", **many, default=[], metavar="KEY=VALUE", help="another #SBATCH line: --sbatch mail-type=END")
    setup = "a line each job runs first: 'module load cuda', 'conda activate ENV' (default: activate this Python's env)"
    add("--setup", **many, metavar="LINE", help=setup)
    add("--cpus-per-gpu", type=int, default=8, help="CPUs per task, one task per device (default: 8)")
    gpus = "1 or 0 (default: 1, but 0 where trainer.accelerator is cpu; auto keeps a GPU unless 0: cells on the CPU)"
    add("--gpus-per-task", type=int, metavar="0|1", help=gpus)
    add("--max-parallel", type=int, default=32, help="array tasks running at once (default: 32)")


@dataclass(frozen=True)
class Options:
    """bench slurm's options, checked when made: a bad one raises ValueError naming it."""

    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None
    constraint: str | None = None
    sbatch: tuple[str, ...] = ()  # KEY=VALUE, each an #SBATCH --KEY=VALUE line
    setup: tuple[str, ...] | None = None  # lines run before the command; None: activate this environment
    cpus_per_gpu: int = 8  # per task: one task per device
    gpus_per_task: int | None = None  # None: 1, but 0 where trainer.accelerator is cpu
    max_parallel: int = 32

    def __post_init__(self):
        seconds = limit_seconds(self.time)
        if seconds is None:
            raise ValueError(f"--time {self.time!r} is none of sbatch's MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS")
        if seconds <= SIGNAL_S:
            raise ValueError(f"--time {self.time} is {seconds} s, not over the {SIGNAL_S} s SIGUSR1 comes before it")
        for flag, n in (("--cpus-per-gpu", self.cpus_per_gpu), ("--max-parallel", self.max_parallel)):
            if n < 1:
                raise ValueError(f"{flag} {n} must be at least 1")
        if self.gpus_per_task not in (None, 0, 1):
            raise ValueError(f"--gpus-per-task {self.gpus_per_task} must be 0 or 1: one task per device, one GPU each")
        if self.mem is not None and not MEM.fullmatch(self.mem):
            raise ValueError(f"--mem {self.mem!r} is not a size for sbatch: 16G, 4000M (a whole number, K, M, G or T)")
        for flag in ("partition", "account", "qos", "constraint"):
            if (value := getattr(self, flag)) is not None and not WORD.fullmatch(value):
                raise ValueError(f"--{flag} {value!r} must be one word, without spaces or quotes")
        for line in self.setup or ():
            if "\n" in line or "\r" in line:
                raise ValueError(f"--setup {line!r} holds a line break: one line per --setup")
        for item in self.sbatch:
            sbatch_line(item)

    def lines(self) -> str:
        """The #SBATCH lines of these options, the same in every job."""
        named = {k: getattr(self, k) for k in ("partition", "account", "qos", "mem", "constraint")}
        return "".join([f"#SBATCH --{k}={v}\n" for k, v in named.items() if v] + list(map(sbatch_line, self.sbatch)))


def limit_seconds(text: str) -> int | None:
    """An sbatch --time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS) in seconds; None if it is none of them."""
    m = TIME.fullmatch(text)
    if not m or any(int(x) > 59 for x in (m["b"], m["c"]) if x):
        return None
    a, b, c = (int(x or 0) for x in (m["a"], m["b"], m["c"]))
    if m["days"] is not None:
        return int(m["days"]) * 86400 + a * 3600 + b * 60 + c
    return a * 3600 + b * 60 + c if m["c"] else a * 60 + b


def sbatch_line(item: str) -> str:
    """`--sbatch KEY=VALUE` as its #SBATCH line; ValueError naming it where it is not one bench can add."""
    key, eq, value = item.partition("=")
    if not eq or not KEY.fullmatch(key) or not WORD.fullmatch(value):
        raise ValueError(f"--sbatch {item!r} is not KEY=VALUE: an sbatch option, no dashes, one word (mail-type=END)")
    if key in OWN:
        raise ValueError(f"--sbatch {item}: use {OWN[key]}, which bench slurm checks and writes in every job")
    if key in MACHINERY:
        raise ValueError(f"--sbatch {item}: bench slurm writes --{key} itself (array, requeue, logs, trainer's tasks)")
    return f"#SBATCH --{key}={value}\n"


def gpus_per_task(accelerator: str, asked: int | None) -> int:
    """GPUs per task (one task per device): 1 unless the cells run on the CPU, or --gpus-per-task 0 with auto."""
    if asked is None:
        return 0 if accelerator == "cpu" else 1
    if asked and accelerator == "cpu":
        raise ValueError("--gpus-per-task 1 with trainer.accelerator=cpu: the cells would not use the GPU")
    if not asked and accelerator != "cpu" and accelerator != "auto":
        raise ValueError(f"--gpus-per-task 0 with trainer.accelerator={accelerator}: the cells need a GPU")
    return asked


def check_overrides(overrides: list[str], params: Params, params_yaml: str | Path = "params.yaml") -> None:
    """bench slurm's overrides: trainer.accelerator only, from params.yaml's auto to cpu or gpu, which decides the
    GPUs the scripts ask for. The cells run params.yaml, which dvc.lock records: nothing may differ from it but that."""
    if bad := [o for o in overrides if o.split("=")[0].strip() != "trainer.accelerator"]:
        raise ValueError(f"{bad[0]}: bench slurm takes trainer.accelerator only: the cells run params.yaml as it is")
    saved = config.load(params_yaml).trainer.accelerator if overrides else params.trainer.accelerator
    if (given := params.trainer.accelerator) != saved and (saved != "auto" or given not in ("cpu", "gpu")):
        raise ValueError(f"trainer.accelerator={given}: params.yaml says {saved}, which the cells run")


def default_setup(root: str, here: Path, prefix: str = sys.prefix, base: str = sys.base_prefix, env=os.environ):
    """The lines that activate the environment running bench slurm, with a comment saying so: its conda environment,
    else its virtual environment (under `root` where it lies in this checkout, `here`), else none."""
    if env.get("CONDA_DEFAULT_ENV") and (Path(prefix) / "conda-meta").is_dir():
        name = env["CONDA_DEFAULT_ENV"] if env.get("CONDA_PREFIX") == prefix else prefix
        hook = [f'eval "$({shlex.quote(env["CONDA_EXE"])} shell.bash hook)"'] if env.get("CONDA_EXE") else []
        return [f"# bench slurm's conda environment ({prefix})", *hook, f"conda activate {shlex.quote(name)}"]
    if prefix != base:  # a venv inside this checkout: the same one inside the checkout at `root`
        inside = Path(prefix).is_relative_to(here)
        venv = Path(root) / Path(prefix).relative_to(here) if inside else prefix
        where = f"{prefix}, inside {here}" if inside else prefix
        return [f"# bench slurm's virtual environment ({where})", f"source {shlex.quote(f'{venv}/bin/activate')}"]
    return [f"# bench slurm ran in no virtual or conda environment ({prefix}): nothing to activate"]


def job_setup(root: str, lines: list[str], gpus: int) -> str:
    """What a job runs before its command: the checkout, the setup lines, and no GPU in sight where it asks for none."""
    return SETUP.format(root=shlex.quote(root), lines="".join(f"{line}\n" for line in lines)) + ("" if gpus else HIDE)


def devices_per_node(params: Params) -> int:
    """trainer.devices as a count, which SLURM needs for its tasks and GPUs."""
    d = params.trainer.devices
    if isinstance(d, list):
        return len(d)
    if isinstance(d, int) and d >= 1:
        return d
    raise ValueError(f"bench slurm needs trainer.devices as a number of devices per node (SLURM's tasks), got {d!r}")


def resources(params: Params, cpus_per_task: int, one_task: bool = False, gpus: int | None = None) -> str:
    """#SBATCH lines for one cell: nodes, one task per device, and `gpus` GPUs per task (None: by the accelerator)."""
    t = params.trainer
    n = 1 if one_task else devices_per_node(params)
    lines = [f"--nodes={1 if one_task else t.num_nodes}", f"--ntasks-per-node={n}", f"--cpus-per-task={cpus_per_task}"]
    if gpus_per_task(t.accelerator, gpus):
        lines.append(f"--gres=gpu:{n}")
    return "".join(f"#SBATCH {line}\n" for line in lines)


def render(params: Params, root: str, out="slurm", dvc_yaml="dvc.yaml", grid: list[Cell] | None = None, **options):
    """{file name: script text} for the cells of `grid` (default: every cell, and submit.sh checks nothing), checking
    `options` (Options' fields) first. Cells run the train stage's command, read from `dvc_yaml`; logs go to
    `out`/logs under `root`, which `write` creates (SLURM opens a job's log before the job runs)."""
    o, accelerator = Options(**options), params.trainer.accelerator
    gpus, commit_gpus = gpus_per_task(accelerator, o.gpus_per_task), int(accelerator not in ("cpu", "auto"))
    logs, template = str(Path(root) / out / "logs"), stage_template(dvc_yaml)
    fields = {"time": o.time, "signal": SIGNAL_S, "logs": logs, "extra": o.lines()}
    header = lambda name, array="": HEADER.format(name=name, array=array, **fields)
    lines = default_setup(root, Path.cwd()) if o.setup is None else ["# --setup", *filter(None, o.setup)]
    cell = resources(params, o.cpus_per_gpu, gpus=gpus) + "\n" + job_setup(root, lines, gpus)
    one = resources(params, o.cpus_per_gpu, True, commit_gpus) + "\n" + job_setup(root, lines, commit_gpus)
    todo = cells(params) if grid is None else grid
    check = "" if grid is None else CHECK.format(names=" ".join(c.name for c in todo))
    stages = " ".join(f"train@{c.name}" for c in todo)
    return {
        "grid.sbatch": header("bench-grid", "_%a") + grid_array(todo, template, cell, o.max_parallel),
        "commit.sbatch": header("bench-commit") + COMMIT.format(job=one, stages=stages),
        "ddp_cell.sbatch": header("bench-ddp-cell")
        + DDP.format(job=cell, command=substitute(template, '"$V"', '"$D"', '"$S"')),
        "submit.sh": SUBMIT.format(setup=job_setup(root, lines, 1), check=check, n=len(todo), logs=logs),
    }


def grid_array(grid: list[Cell], template: str, job: str, parallel: int) -> str:
    """The job array: one task per cell, each the train stage's command for its cell."""
    command = substitute(template, '"${VARIANTS[$i]}"', '"${DEPTHS[$i]}"', '"${SEEDS[$i]}"')
    arrays = {f"{k}s": " ".join(str(getattr(c, k)) for c in grid) for k in ("name", "variant", "depth", "seed")}
    return GRID.format(last=len(grid) - 1, parallel=parallel, job=job, n=len(grid), command=command, **arrays)


def write(params: Params, out: str | Path, root: str, **kw) -> list[Path]:
    out = Path(out)
    texts = render(params, root, out=out, **kw)  # bad options and a bad trainer.devices: refused before any write
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_text(text)
        (out / name).chmod(0o755)
    return [out / name for name in texts]


def run(args: argparse.Namespace, params: Params) -> int:
    """`bench slurm`: the options and overrides checked, then the scripts for the out-of-date cells (--all: all)."""
    from bench.scale import launcher  # late: bench's parser imports this module (add_arguments) for every command

    options = {k.name: getattr(args, k.name) for k in dataclasses.fields(Options) if getattr(args, k.name) is not None}
    Options(**options)  # every option checked before DVC is asked anything
    check_overrides(args.overrides, params)
    gpus_per_task(params.trainer.accelerator, args.gpus_per_task)
    every = cells(params)
    try:
        grid = every if args.all else launcher.stale_cells(params)
    except (RuntimeError, ValueError) as e:  # not a DVC repo, dvc missing
        raise ValueError(" ".join(str(e).split()) + "; --all writes every cell without asking DVC") from None
    if not grid:
        print(f"0 of {len(every)} cells out of date: no job array written (--all writes every cell)")
        return 0
    root = args.root or str(Path.cwd())
    paths = write(params, args.out, root, grid=None if args.all else grid, **options)
    print(f"{len(grid)} of {len(every)} cells in the job array ({'--all' if args.all else 'out of date'})")
    print("wrote " + ", ".join(map(str, paths)) + f"\nsubmit the grid with: bash {args.out}/submit.sh")
    return 0
