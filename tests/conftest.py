import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import config
from bench.datasets import prepare

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


@pytest.fixture
def params():
    """The repo's params.yaml, shortened to a quick CPU run."""
    def make(*overrides):
        return config.load(PARAMS, ["trainer.accelerator=cpu", "wandb.mode=disabled", *overrides])
    return make


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """The offline default dataset, prepared once by the real `bench prepare` code."""
    out = tmp_path_factory.mktemp("prepared") / "digits"
    prepare(config.load(PARAMS).data, out)
    return out


BIN = Path(sys.executable).parent  # the venv's bin: dvc, and bench for the stages


def run(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str),
                       timeout=600)
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture
def repo(tmp_path):
    """A temp copy of the project as a git + DVC repo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("bench", "params.yaml", "dvc.yaml", ".gitignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    (repo / "data/raw").mkdir(parents=True)
    (repo / "data/raw/.gitkeep").touch()
    run("git init -q && git config user.email t@t && git config user.name t && dvc init -q", repo)
    return repo


def set_params(repo, **sections):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        p[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
