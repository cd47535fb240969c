"""What the tests share besides fixtures: the project's paths, and one way to run a command in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
BIN = Path(sys.executable).parent  # the venv's bin: dvc, wandb, and bench for the stages
QUICK = ["--no-progress", "wandb.mode=disabled", "trainer.accelerator=cpu"]  # bench train on the CPU, no W&B


def run(cmd, cwd=ROOT, check=True, timeout=600):
    """A shell command (str) or argv (list), with the venv's bin first on PATH; its CompletedProcess."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str),
                       timeout=timeout)
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def bench(*args, check=False, **kw):
    """`bench ARGS` in a subprocess (python -m bench), for what needs a process of its own: DDP, kill -9."""
    return run([sys.executable, "-m", "bench", *map(str, args)], check=check, **kw)


def set_params(repo, **sections):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        p[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
