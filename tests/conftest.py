"""The tests' fixtures: params for a quick CPU run, the prepared digits, `bench` in-process, a repo copy, SLURM."""

import os
import shutil

import pytest
import torch
from helpers import DIGITS, GRID_PARAMS, PARAMS, PROBE, ROOT, run, write_grid

from bench import config
from bench.prepare.stage import prepare


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs one worker per core) each worker computes on one thread, so that the
    workers do not oversubscribe the cores; subprocesses inherit it through OMP_NUM_THREADS."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture
def params():
    """The repo's params.yaml, shortened to a quick CPU run with small diagnostics."""

    def make(*overrides):
        return config.load(PARAMS, ["trainer.accelerator=cpu", "wandb.mode=disabled", *DIGITS, *PROBE, *overrides])

    return make


@pytest.fixture(scope="package")  # tests/ is not a package: one for the whole run
def digits_dir(tmp_path_factory):
    """The offline default dataset, prepared once by the real `bench prepare` code."""
    out = tmp_path_factory.mktemp("prepared") / "digits"
    prepare(config.load(PARAMS, DIGITS).data, out)
    return out


@pytest.fixture
def cli(capsys):
    """`bench ARGS` in this process, through bench.cli.main: (exit code, stdout, stderr)."""
    from bench import cli as bench_cli

    def call(*args):
        try:
            code = bench_cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse's exits, and the exit-2 refusals
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def repo(tmp_path):
    """A temp copy of the project as a git + DVC repo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("bench", "presets", "params.yaml", "dvc.yaml", ".gitignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    (repo / "data/raw").mkdir(parents=True)
    (repo / "data/raw/.gitkeep").touch()
    run("git init -q && git config user.email t@t && git config user.name t && dvc init -q", repo)
    return repo


@pytest.fixture
def fake_slurm(monkeypatch):
    """Call it to enter the environment of a SLURM job array's task, as Lightning's SLURMEnvironment reads it
    (job 4242, task 2 of array 4240, one process); the real scheduler is test_cluster.py's."""

    def enter() -> dict:
        env = {
            "SLURM_NTASKS": "1",
            "SLURM_JOB_NAME": "bench-grid",
            "SLURM_JOB_ID": "4242",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_NODEID": "0",
            "SLURM_ARRAY_JOB_ID": "4240",
            "SLURM_ARRAY_TASK_ID": "2",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return env

    return enter


HAND_SWEEP = [
    {"variant": "plain", "depth": 20, "lr": 1.0, "train/error": None, "diverged": True, "diverged_step": 3},
    {"variant": "plain_bn", "depth": 20, "lr": 1.0, "train/error": 0.05, "diverged": False},
]


@pytest.fixture(scope="package")  # tests/ is not a package: one for the whole run
def hand_report(tmp_path_factory):
    """The report of helpers.write_grid's hand-made grid, with an lr sweep and the toy's figure (a real PNG), so
    that every figure the report can show is in it; written once: (folder, summary, report.md). The report is in
    folder/report, the cells in folder/runs."""
    import json

    import matplotlib.image

    from bench.report.stage import report

    folder = tmp_path_factory.mktemp("hand-report")
    write_grid(folder / "runs")
    (folder / "sweep.json").write_text(json.dumps({"runs": HAND_SWEEP}))
    (folder / "report/toy").mkdir(parents=True)
    matplotlib.image.imsave(folder / "report/toy/toy_shattering.png", [[0.0, 1.0], [1.0, 0.0]])
    params = config.load(PARAMS, GRID_PARAMS)
    summary = report(params, folder / "runs", folder / "report", folder / "sweep.json", folder / "report/toy")
    return folder, summary, (folder / "report/report.md").read_text()
