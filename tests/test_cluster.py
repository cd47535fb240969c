"""A real one-node SLURM cluster: the grid as a job array, preemption and requeue, DDP under srun, changed params, a
conda-style setup."""

import json
import subprocess
import time

import pytest
from cluster import Cluster, install
from helpers import ROOT, bench_argv, run, set_params

pytestmark = pytest.mark.cluster

TINY = dict(
    train={"max_steps": 20, "milestones": [15]},
    wandb={"mode": "disabled"},
    trainer={"accelerator": "cpu", "devices": 1, "strategy": "auto"},
    lr_sweep={"depth": 8, "lrs": [0.1], "max_steps": 10},
    toy={"depths": [1, 2], "seeds": 1, "points": 16},
)


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
    assert "submitted job array" in out
    assert "(2 cells)" in out
    jobs = cluster.run("squeue", "-h", "-o", "%i %j", timeout=30).stdout.split("\n")
    commit = next(line.split()[0] for line in jobs if "bench-commit" in line)
    assert cluster.wait(commit, timeout=400)[commit] == "COMPLETED", cluster.logs()
    for cell in ("plain-8-0", "residual_bn-8-0"):
        assert json.loads((repo / "runs" / cell / "metrics.json").read_text())["steps"] == 20
    status = run("dvc status --json", repo).stdout
    assert "train@" not in status  # every stage recorded, nothing to run
    assert json.loads(status or "{}") == {}
    assert (repo / "report/report.md").exists()


def checkpoint_step(path) -> int:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    except Exception:  # not there yet
        return -1


def preempt(cluster, repo, job: str, cell: str, after_step: int = 30) -> None:
    """SIGUSR1 to the job's steps once the cell has a checkpoint at `after_step`, as SLURM sends it before the
    time limit: Lightning saves its requeue checkpoint and requeues the job. Returns once it waits in the queue."""
    folder = repo / "runs" / cell
    deadline = time.time() + 300
    while checkpoint_step(folder / "last.ckpt") < after_step:
        assert time.time() < deadline, cluster.logs()
        assert cluster.state(job) in ("PENDING", "RUNNING", "CONFIGURING"), cluster.logs()
        time.sleep(0.2)
    assert cluster.state(job) == "RUNNING", "the cell ended before it could be preempted: make it longer"
    cluster.run("scancel", "--signal=USR1", job)
    deadline = time.time() + 120
    while not (list(folder.glob("hpc_ckpt_*.ckpt")) and cluster.state(job) in ("PENDING", "REQUEUED")):
        assert time.time() < deadline, (cluster.state(job), cluster.logs())
        time.sleep(0.2)


def release(cluster, job: str) -> None:
    """Start the requeued job now, not after SLURM's hold."""
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def log_of(repo, job: str) -> str:
    return "".join(p.read_text() for p in (repo / "slurm/logs").glob(f"*-{job}*.out"))


def local_run(repo, cell: str, *overrides) -> dict:
    """The same cell trained in one process outside SLURM, for reference."""
    variant, depth, seed = cell.rsplit("-", 2)
    out = repo / "reference" / cell
    run(
        [
            "bench",
            "train",
            "--variant",
            variant,
            "--depth",
            depth,
            "--seed",
            seed,
            "--out",
            out,
            "--data",
            "data/prepared",
            "--no-progress",
            *overrides,
        ],
        repo,
    )
    return json.loads((out / "metrics.json").read_text())


LONG = {
    "grid": {"variants": ["residual_bn"], "depths": [8], "seeds": [0]},
    "train": {"max_steps": 600, "milestones": [400]},
    "trainer": {"deterministic": True},
}


def test_a_preempted_cell_is_requeued_and_ends_like_an_uninterrupted_run(cluster, repo):
    set_params(repo, **LONG)
    run("bench slurm --cpus-per-gpu 1 --time 00:10:00", repo)
    job = submit(cluster, repo, "ddp_cell.sbatch", "residual_bn", "8", "0")
    preempt(cluster, repo, job, "residual_bn-8-0")
    release(cluster, job)
    assert cluster.wait(job, timeout=300)[job] == "COMPLETED", log_of(repo, job)
    assert "resuming from the SLURM requeue checkpoint" in log_of(repo, job)
    requeued = json.loads((repo / "runs/residual_bn-8-0/metrics.json").read_text())
    whole = local_run(repo, "residual_bn-8-0")
    for k in ("steps", "train/loss", "test/loss", "test/error", "end/shattering"):
        assert requeued[k] == pytest.approx(whole[k], rel=1e-6), k


def test_a_requeued_cell_whose_params_changed_trains_afresh_and_says_why(cluster, repo):
    set_params(repo, **LONG)
    run("bench slurm --cpus-per-gpu 1 --time 00:10:00", repo)
    job = submit(cluster, repo, "ddp_cell.sbatch", "residual_bn", "8", "0")
    preempt(cluster, repo, job, "residual_bn-8-0")
    set_params(repo, train={"lr": 0.03})  # edited while the job waits in the queue
    release(cluster, job)
    assert cluster.wait(job, timeout=300)[job] == "COMPLETED", log_of(repo, job)
    log = log_of(repo, job)
    assert "set aside hpc_ckpt_" in log
    assert "other params" in log
    assert list((repo / "runs/residual_bn-8-0").glob("hpc-ckpt-*.other-run-1.ckpt"))
    requeued = json.loads((repo / "runs/residual_bn-8-0/metrics.json").read_text())
    fresh = local_run(repo, "residual_bn-8-0")  # params.yaml now has lr 0.03
    for k in ("steps", "train/loss", "test/loss", "test/error"):
        assert requeued[k] == pytest.approx(fresh[k], rel=1e-6), k


def test_ddp_under_srun_writes_one_result_like_one_process(cluster, repo):
    # no BN and no augmentation: 2 processes see the same 128 images per step as 1 (as test_scale's DDP test)
    set_params(
        repo,
        grid={"variants": ["residual"], "depths": [8], "seeds": [0]},
        train={"max_steps": 20, "augment": False},
        trainer={"devices": 2, "strategy": "ddp", "deterministic": True},
        wandb={"mode": "offline", "dir": str(repo / "wb")},
    )
    run("bench slurm --cpus-per-gpu 1 --time 00:10:00", repo)
    ddp = (repo / "slurm/ddp_cell.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in ddp
    assert "--gres" not in ddp
    job = submit(cluster, repo, "ddp_cell.sbatch", "residual", "8", "0")
    assert cluster.wait(job, timeout=300)[job] == "COMPLETED", log_of(repo, job)
    two = json.loads((repo / "runs/residual-8-0/metrics.json").read_text())
    assert json.loads((repo / "runs/residual-8-0/env.json").read_text())["world_size"] == 2
    assert log_of(repo, job).count("wrote ") == 1  # rank 0 reports
    assert len(list((repo / "wb/wandb").glob("offline-run-*"))) == 1
    one = local_run(repo, "residual-8-0", "trainer.devices=1", "trainer.strategy=auto", "wandb.mode=disabled")
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-3)
    assert two["train/loss"] == pytest.approx(one["train/loss"], rel=1e-3)


def test_a_conda_style_setup_activates_the_jobs_environment(cluster, repo, tmp_path):
    """--setup lines in place of the default activation, as on a conda cluster: conda's shell hook, `conda activate
    ENV`, an export. Submitted from a shell whose PATH holds no Python environment, the cell runs in the one its setup
    activated. The conda here is a stand-in: its hook defines a `conda` function whose activate sources ENV, as
    conda's does; ENV is the project's venv."""
    conda = tmp_path / "conda"
    (conda / "envs").mkdir(parents=True)
    (conda / "envs/bench").symlink_to(ROOT / ".venv")
    (conda / "bin").mkdir()
    hook = f'conda() {{ [ "$1" = activate ] && source "{conda}/envs/$2/bin/activate"; }}'
    (conda / "bin/conda").write_text(f"#!/bin/bash\necho '{hook}'\n")
    (conda / "bin/conda").chmod(0o755)
    setup = [f'eval "$({conda}/bin/conda shell.bash hook)"', "conda activate bench", "export BENCH_SETUP_RAN=1"]
    setup.append('echo "setup: BENCH_SETUP_RAN=$BENCH_SETUP_RAN bench=$(command -v bench)"')
    options = ["--all", "--cpus-per-gpu", "1", "--time", "10:00", *(f"--setup={x}" for x in setup)]
    run(bench_argv("slurm", *options), repo)  # this checkout's bench, whatever the venv's editable install points at
    grid = (repo / "slurm/grid.sbatch").read_text()
    assert "conda activate bench\n" in grid
    assert "bin/activate" not in grid  # the default activation replaced
    env = {**cluster.env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # no bench, dvc or venv python on it
    r = subprocess.run(
        ["sbatch", "--parsable", "--array=0", repo / "slurm/grid.sbatch"],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    assert cluster.wait(job, timeout=300)[job] == "COMPLETED", log_of(repo, job) + cluster.logs()
    assert f"setup: BENCH_SETUP_RAN=1 bench={ROOT}/.venv/bin/bench" in log_of(repo, job)
    assert json.loads((repo / "runs/plain-8-0/metrics.json").read_text())["steps"] == 20
