"""`bench slurm`: sbatch scripts for the grid on a SLURM cluster, preemption-safe.

grid.sbatch is a job array, one task per cell of the grid, each running the train stage's own
command on one GPU; commit.sbatch runs after it (afterok) and records the cells in dvc.lock, then
`dvc repro` finishes the pipeline; submit.sh submits both. ddp_cell.sbatch trains one cell with
DDP over `trainer.num_nodes` nodes x `trainer.devices` GPUs (srun, one task per GPU). Every job asks
for SIGUSR1 90 s before its time limit: Lightning then saves an hpc checkpoint in the cell's folder
and requeues the job, and the requeued job resumes from it (bench/resume.py).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from bench.config import Params
from bench.grid import cells
from bench.stages import stage_template, substitute

HEADER = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --time={time}
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={logs}/%x-%A_%a.out
{extra}"""

SETUP = """set -euo pipefail
cd {root}
source .venv/bin/activate
"""


def _extra(partition: str | None, account: str | None) -> str:
    lines = [f"#SBATCH --partition={partition}"] if partition else []
    lines += [f"#SBATCH --account={account}"] if account else []
    return "\n".join(lines) + ("\n" if lines else "")


def render(params: Params, root: str, time: str = "24:00:00", partition: str | None = None,
           account: str | None = None, cpus_per_gpu: int = 8, max_parallel: int = 32,
           dvc_yaml: str | Path = "dvc.yaml") -> dict[str, str]:
    """{file name: script text}. Cells run the train stage's command, read from `dvc_yaml`."""
    grid = cells(params)
    template = stage_template(dvc_yaml)
    names = [c.name for c in grid]
    extra = _extra(partition, account)
    logs = "logs/slurm"
    array = HEADER.format(name="bench-grid", time=time, logs=logs, extra=extra) + (
        f"#SBATCH --array=0-{len(grid) - 1}%{max_parallel}\n"
        f"#SBATCH --ntasks=1\n#SBATCH --gres=gpu:1\n#SBATCH --cpus-per-task={cpus_per_gpu}\n\n"
        + SETUP.format(root=shlex.quote(root))
        + "CELLS=(" + " ".join(names) + ")\n"
        + "VARIANTS=(" + " ".join(c[0] for c in grid) + ")\n"
        + "DEPTHS=(" + " ".join(str(c[1]) for c in grid) + ")\n"
        + "SEEDS=(" + " ".join(str(c[2]) for c in grid) + ")\n"
        + "i=$SLURM_ARRAY_TASK_ID\n"
        + 'echo "cell ${CELLS[$i]} (task $i of ' + str(len(grid)) + ')"\n'
        + "# the train stage's command (dvc.yaml); srun makes it one SLURM task, which Lightning detects\n"
        + "srun " + substitute(template, '"${VARIANTS[$i]}"', '"${DEPTHS[$i]}"', '"${SEEDS[$i]}"') + " --no-progress\n"
    )
    commit = HEADER.format(name="bench-commit", time="01:00:00", logs=logs, extra=extra).replace("_%a", "") + (
        "#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=4\n\n" + SETUP.format(root=shlex.quote(root))
        + "dvc commit --force " + " ".join(f"train@{n}" for n in names) + "\n"
        + "dvc repro  # the stages that remain: lr sweep, toy, report\n"
    )
    t = params.trainer
    ddp = HEADER.format(name="bench-ddp-cell", time=time, logs=logs, extra=extra).replace("_%a", "") + (
        f"#SBATCH --nodes={t.num_nodes}\n#SBATCH --ntasks-per-node={t.devices}\n#SBATCH --gres=gpu:{t.devices}\n"
        f"#SBATCH --cpus-per-task={cpus_per_gpu}\n\n" + SETUP.format(root=shlex.quote(root))
        + "# usage: sbatch slurm/ddp_cell.sbatch VARIANT DEPTH SEED\n"
        + "# trainer.devices, trainer.num_nodes and trainer.strategy (ddp) come from params.yaml, as do the\n"
        + "# #SBATCH lines above: one task per GPU, and train.batch_size is the global batch across them all\n"
        + 'V=$1 D=$2 S=$3\n'
        + "srun " + substitute(template, '"$V"', '"$D"', '"$S"') + " --no-progress\n"
        + 'dvc commit --force "train@$V-$D-$S"\n'
    )
    submit = (
        "#!/bin/bash\n# Submit the grid as a job array, then the commit job once every cell has succeeded.\n"
        "set -euo pipefail\ncd \"$(dirname \"$0\")/..\"\nmkdir -p " + logs + "\n"
        "dvc repro prepare  # on the login node: verifies and prepares the data once\n"
        "jid=$(sbatch --parsable slurm/grid.sbatch)\n"
        "sbatch --dependency=afterok:${jid} slurm/commit.sbatch\n"
        "echo \"submitted job array ${jid} (" + str(len(grid)) + " cells) and its commit job\"\n"
    )
    return {"grid.sbatch": array, "commit.sbatch": commit, "ddp_cell.sbatch": ddp, "submit.sh": submit}


def write(params: Params, out: str | Path, root: str, **kw) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render(params, root, **kw).items():
        path = out / name
        path.write_text(text)
        path.chmod(0o755)
        paths.append(path)
    return paths
