"""The Makefile as a user runs it: `make clean` keeps what git tracks; the torch build's index can be chosen."""

import shutil
import subprocess

import pytest
from helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make, git")


def sh(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, timeout=120)


def test_make_clean_removes_what_is_generated_and_keeps_what_git_tracks(tmp_path):
    clone = tmp_path / "clone"
    assert sh(f"git clone -q {ROOT} {clone}", tmp_path).returncode == 0
    for name in ("Makefile", ".gitignore"):  # this checkout's, committed or not
        shutil.copy(ROOT / name, clone / name)
    sh("git -c user.name=t -c user.email=t@t commit -qam 'this checkout'", clone)
    cell = next(p for p in (clone / "runs").iterdir() if (p / "metrics.json").exists())
    generated = [
        cell / "last.ckpt",
        clone / "runs_lr" / "plain-20-lr0.1" / "metrics.json",
        clone / "logs" / "grid" / "x.log",
        clone / "dvc_plots" / "index.html",
        clone / ".venv" / "marker",
    ]
    for path in generated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("generated")
    r = sh("make clean", clone)
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in generated)
    assert (cell / "metrics.json").exists()
    assert sh("git status --porcelain", clone).stdout == ""  # every tracked file is still there, unchanged


def test_the_torch_index_can_be_chosen_and_the_default_is_pypi(tmp_path):
    default = sh(f"make -n -B VENV={tmp_path / 'v'} setup", ROOT).stdout
    assert "torch==2.13.0" in default
    assert "--index-url" not in default
    url = "https://download.pytorch.org/whl/cu126"
    cuda = sh(f"make -n -B VENV={tmp_path / 'v'} TORCH_INDEX={url} setup", ROOT).stdout
    torch_line = next(line for line in cuda.splitlines() if "torch==" in line)
    assert f"--index-url {url}" in torch_line
    assert all("--index-url" not in line for line in cuda.splitlines() if "-e" in line)  # the rest from PyPI


def test_generated_folders_are_git_ignored_and_results_are_not():
    ignored = [
        "dvc_plots/index.html",
        "slurm/grid.sbatch",
        "slurm/logs/x.out",
        "logs/grid/x.log",
        "runs/plain-8-0/last.ckpt",
        "runs_lr/plain-20-lr0.1/metrics.json",
    ]
    kept = ["runs/plain-8-0/metrics.json", "runs_lr/summary.json", "report/report.md"]
    r = sh("git check-ignore --no-index " + " ".join(ignored + kept), ROOT)
    assert r.stdout.split() == ignored


def test_make_he2016_without_the_data_changes_nothing(tmp_path):
    """The data is checked before the workspace is touched: exit 2, a message naming the file, params.yaml as it
    was (the venv is this checkout's, marked installed so that make does not rebuild it)."""
    clone = tmp_path / "clone"
    assert sh(f"git clone -q {ROOT} {clone}", tmp_path).returncode == 0
    shutil.copy(ROOT / "Makefile", clone / "Makefile")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than the clone's Makefile and pyproject.toml
    before = (clone / "params.yaml").read_text()
    r = sh(f"make he2016 VENV={venv}", clone)
    assert r.returncode == 2
    assert "data/raw/cifar-10-python.tar.gz is missing" in r.stderr
    assert (clone / "params.yaml").read_text() == before
    assert not list(clone.glob(".params.yaml.*"))
