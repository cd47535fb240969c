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
from bench.record import Cell, cells
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
    logs = str(Path(root) / out / "logs")
    extra = _extra(partition, account)
    header = lambda name, limit=time, array="": HEADER.format(
        name=name, time=limit, logs=logs, array=array, extra=extra
    )
    setup = SETUP.format(root=shlex.quote(root))
    cell = resources(params, cpus_per_gpu)
    template = stage_template(dvc_yaml)
    grid = cells(params)
    return {
        "grid.sbatch": header("bench-grid", array="_%a") + grid_array(grid, template, cell, setup, max_parallel),
        "commit.sbatch": header("bench-commit", "04:00:00")
        + commit(grid, resources(params, cpus_per_gpu, one_task=True), setup),
        "ddp_cell.sbatch": header("bench-ddp-cell") + ddp_cell(template, cell, setup),
        "submit.sh": submit(root, len(grid), logs),
    }


def grid_array(grid: list[Cell], template: str, cell: str, setup: str, max_parallel: int) -> str:
    """The job array's body: one task per cell, each the train stage's command for its cell."""
    bash_array = lambda name, values: f"{name}=(" + " ".join(str(v) for v in values) + ")\n"
    return (
        f"#SBATCH --array=0-{len(grid) - 1}%{max_parallel}\n"
        + cell
        + "\n"
        + setup
        + bash_array("CELLS", [c.name for c in grid])
        + bash_array("VARIANTS", [c.variant for c in grid])
        + bash_array("DEPTHS", [c.depth for c in grid])
        + bash_array("SEEDS", [c.seed for c in grid])
        + "i=$SLURM_ARRAY_TASK_ID\n"
        + f'echo "cell ${{CELLS[$i]}} (task $i of {len(grid)})"\n'
        + "# the train stage's command (dvc.yaml); srun starts one task per device, which Lightning detects\n"
        + "srun "
        + substitute(template, '"${VARIANTS[$i]}"', '"${DEPTHS[$i]}"', '"${SEEDS[$i]}"')
        + " --no-progress\n"
    )


def commit(grid: list[Cell], resources_text: str, setup: str) -> str:
    """The commit job's body: the cells recorded in dvc.lock, then the stages that remain."""
    return (
        resources_text
        + "\n"
        + setup
        + "dvc commit --force "
        + " ".join(f"train@{c.name}" for c in grid)
        + "\n"
        + "dvc repro  # the stages that remain: the lr sweep (it trains, hence this job's device), toy, report\n"
    )


def ddp_cell(template: str, cell: str, setup: str) -> str:
    """One cell over every node and device that `trainer` asks for, its cell given on sbatch's command line."""
    return (
        cell
        + "\n"
        + setup
        + "# usage: sbatch ddp_cell.sbatch VARIANT DEPTH SEED\n"
        + "# trainer.devices, trainer.num_nodes and trainer.strategy (ddp) come from params.yaml, as do the\n"
        + "# #SBATCH lines above: one task per device, and train.batch_size is the global batch across them all\n"
        + "V=$1 D=$2 S=$3\n"
        + "srun "
        + substitute(template, '"$V"', '"$D"', '"$S"')
        + " --no-progress\n"
        + 'dvc commit --force "train@$V-$D-$S"\n'
    )


def submit(root: str, cells: int, logs: str) -> str:
    """submit.sh: the data prepared on the login node, then the job array and its commit job (afterok)."""
    return (
        "#!/bin/bash\n# Submit the grid as a job array, then the commit job once every cell has succeeded.\n"
        'set -euo pipefail\nhere=$(cd "$(dirname "$0")" && pwd)\ncd '
        + shlex.quote(root)
        + "\nsource .venv/bin/activate\n"
        "dvc repro prepare  # on the login node: verifies and prepares the data once\n"
        'jid=$(sbatch --parsable "$here/grid.sbatch")\n'
        'sbatch --dependency=afterok:${jid} "$here/commit.sbatch"\n'
        'echo "submitted job array ${jid} (' + str(cells) + " cells) and its commit job; logs in " + logs + '"\n'
    )


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
