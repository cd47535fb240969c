"""On a real one-node SLURM cluster (tests/cluster.py): the grid as a job array and its commit job,
preemption and requeue, DDP under srun, and a requeued cell whose params changed meanwhile."""
import json
import os
import time

import pytest

from cluster import Cluster, install
from helpers import ROOT, run, set_params

pytestmark = pytest.mark.cluster

TINY = dict(train={"max_steps": 20, "milestones": [15]}, wandb={"mode": "disabled"},
            trainer={"accelerator": "cpu", "devices": 1, "strategy": "auto"},
            lr_sweep={"depth": 8, "lrs": [0.1], "max_steps": 10}, toy={"depths": [1, 2], "seeds": 1, "points": 16})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if why := install():
        pytest.skip(why)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def repo(repo):
    """The project as a git + DVC repo, with the venv the jobs activate (`source .venv/bin/activate`)."""
    (repo / ".venv").symlink_to(ROOT / ".venv")
    set_params(repo, grid={"variants": ["plain", "residual_bn"], "depths": [8], "seeds": [0]}, **TINY)
    run("git add -A && git commit -qm init && dvc repro prepare", repo)
    return repo


def submit(cluster, repo, script, *args) -> str:
    return cluster.run("sbatch", "--parsable", repo / "slurm" / script, *args, cwd=repo).stdout.strip().split(";")[0]


def test_the_grid_as_a_job_array_then_its_commit_job(cluster, repo):
    run("bench slurm --cpus-per-gpu 1 --time 00:10:00", repo)
    out = cluster.run("bash", repo / "slurm/submit.sh", cwd=repo, timeout=300).stdout
    assert "submitted job array" in out and "(2 cells)" in out
    jobs = cluster.run("squeue", "-h", "-o", "%i %j", timeout=30).stdout.split("\n")
    commit = next(line.split()[0] for line in jobs if "bench-commit" in line)
    assert cluster.wait(commit, timeout=400)[commit] == "COMPLETED", cluster.logs()
    for cell in ("plain-8-0", "residual_bn-8-0"):
        assert json.loads((repo / "runs" / cell / "metrics.json").read_text())["steps"] == 20
    status = run("dvc status --json", repo).stdout
    assert "train@" not in status and json.loads(status or "{}") == {}  # every stage recorded, nothing to run
    assert (repo / "report/report.md").exists()
