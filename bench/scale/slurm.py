"""`bench slurm`: sbatch scripts for the grid on a SLURM cluster, preemption-safe.

grid.sbatch is a job array, one task per cell of the grid, each running the train stage's own
command with the resources `trainer` asks for (nodes, one task per device, GPUs unless the
accelerator is the CPU); commit.sbatch runs after it (afterok) on the same resources, records the
cells in dvc.lock and runs the stages that remain (the lr sweep trains); submit.sh submits both.
ddp_cell.sbatch trains one cell with DDP over `trainer.num_nodes` nodes x `trainer.devices`
devices (srun, one task per device). Every job asks for SIGUSR1 90 s before its time limit:
Lightning then saves a requeue checkpoint in the cell's folder and requeues the job, and the
requeued job resumes from it when it is the same run's (bench/train/resume.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from bench.config import Params
from bench.record import cells
from bench.scale.stages import stage_template, substitute

HEADER = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --time={time}
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={logs}/%x-%A{array}.out
{extra}"""

SETUP = """set -euo pipefail
cd {root}
source .venv/bin/activate
"""


def _extra(partition: str | None, account: str | None) -> str:
    lines = [f"#SBATCH --partition={partition}"] if partition else []
    lines += [f"#SBATCH --account={account}"] if account else []
    return "\n".join(lines) + ("\n" if lines else "")


def devices_per_node(params: Params) -> int:
    """trainer.devices as a count, which SLURM needs for its tasks and GPUs."""
    d = params.trainer.devices
    if isinstance(d, list):
        return len(d)
    if isinstance(d, int) and d >= 1:
        return d
    raise ValueError(
        f"bench slurm needs trainer.devices as a number of devices per node, got {d!r}: SLURM "
        f"allocates the tasks and GPUs before the job starts"
    )


def resources(params: Params, cpus_per_task: int, one_task: bool = False) -> str:
    """#SBATCH lines for one cell: nodes, one task per device, and as many GPUs unless on the CPU."""
    t = params.trainer
    n = 1 if one_task else devices_per_node(params)
    lines = [f"--nodes={1 if one_task else t.num_nodes}", f"--ntasks-per-node={n}", f"--cpus-per-task={cpus_per_task}"]
    if t.accelerator != "cpu":
        lines.append(f"--gres=gpu:{n}")
    return "".join(f"#SBATCH {line}\n" for line in lines)


def render(
    params: Params,
    root: str,
    out: str | Path = "slurm",
    time: str = "24:00:00",
    partition: str | None = None,
    account: str | None = None,
    cpus_per_gpu: int = 8,
    max_parallel: int = 32,
    dvc_yaml: str | Path = "dvc.yaml",
) -> dict[str, str]:
    """{file name: script text}. Cells run the train stage's command, read from `dvc_yaml`; logs go to
    `out`/logs under `root`, which `write` creates (SLURM opens a job's log before the job runs)."""
    grid = cells(params)
    template = stage_template(dvc_yaml)
    names = [c.name for c in grid]
    extra = _extra(partition, account)
    logs = str(Path(root) / out / "logs")
    cell = resources(params, cpus_per_gpu)
    header = lambda name, limit=time, array="": HEADER.format(
        name=name, time=limit, logs=logs, array=array, extra=extra
    )
    array = header("bench-grid", array="_%a") + (
        f"#SBATCH --array=0-{len(grid) - 1}%{max_parallel}\n"
        + cell
        + "\n"
        + SETUP.format(root=shlex.quote(root))
        + "CELLS=("
        + " ".join(names)
        + ")\n"
        + "VARIANTS=("
        + " ".join(c.variant for c in grid)
        + ")\n"
        + "DEPTHS=("
        + " ".join(str(c.depth) for c in grid)
        + ")\n"
        + "SEEDS=("
        + " ".join(str(c.seed) for c in grid)
        + ")\n"
        + "i=$SLURM_ARRAY_TASK_ID\n"
        + 'echo "cell ${CELLS[$i]} (task $i of '
        + str(len(grid))
        + ')"\n'
        + "# the train stage's command (dvc.yaml); srun starts one task per device, which Lightning detects\n"
        + "srun "
        + substitute(template, '"${VARIANTS[$i]}"', '"${DEPTHS[$i]}"', '"${SEEDS[$i]}"')
        + " --no-progress\n"
    )
    commit = header("bench-commit", "04:00:00") + (
        resources(params, cpus_per_gpu, one_task=True)
        + "\n"
        + SETUP.format(root=shlex.quote(root))
        + "dvc commit --force "
        + " ".join(f"train@{n}" for n in names)
        + "\n"
        + "dvc repro  # the stages that remain: the lr sweep (it trains, hence this job's device), toy, report\n"
    )
    ddp = header("bench-ddp-cell") + (
        cell
        + "\n"
        + SETUP.format(root=shlex.quote(root))
        + "# usage: sbatch ddp_cell.sbatch VARIANT DEPTH SEED\n"
        + "# trainer.devices, trainer.num_nodes and trainer.strategy (ddp) come from params.yaml, as do the\n"
        + "# #SBATCH lines above: one task per device, and train.batch_size is the global batch across them all\n"
        + "V=$1 D=$2 S=$3\n"
        + "srun "
        + substitute(template, '"$V"', '"$D"', '"$S"')
        + " --no-progress\n"
        + 'dvc commit --force "train@$V-$D-$S"\n'
    )
    submit = (
        "#!/bin/bash\n# Submit the grid as a job array, then the commit job once every cell has succeeded.\n"
        'set -euo pipefail\nhere=$(cd "$(dirname "$0")" && pwd)\ncd '
        + shlex.quote(root)
        + "\nsource .venv/bin/activate\n"
        "dvc repro prepare  # on the login node: verifies and prepares the data once\n"
        'jid=$(sbatch --parsable "$here/grid.sbatch")\n'
        'sbatch --dependency=afterok:${jid} "$here/commit.sbatch"\n'
        'echo "submitted job array ${jid} (' + str(len(grid)) + " cells) and its commit job; logs in " + logs + '"\n'
    )
    return {"grid.sbatch": array, "commit.sbatch": commit, "ddp_cell.sbatch": ddp, "submit.sh": submit}


def write(params: Params, out: str | Path, root: str, **kw) -> list[Path]:
    out = Path(out)
    texts = render(params, root, out=out, **kw)  # a bad trainer.devices is refused before anything is written
    (out / "logs").mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = out / name
        path.write_text(text)
        path.chmod(0o755)
        paths.append(path)
    return paths
