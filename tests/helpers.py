"""What the tests share besides fixtures: the project's paths, and one way to run a command in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
BIN = Path(sys.executable).parent  # the venv's bin: dvc, wandb, and bench for the stages
# the offline digits data as the tests prepare it, whatever params.yaml's defaults say
DIGITS = ["data.name=digits", "data.source=null", "data.md5=null", "data.val_size=144"]
QUICK = ["--no-progress", "wandb.mode=disabled", "trainer.accelerator=cpu", *DIGITS]  # bench train on the CPU


def run(cmd, cwd=ROOT, check=True, timeout=600):
    """A shell command (str) or argv (list), with the venv's bin first on PATH; its CompletedProcess."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str), timeout=timeout
    )
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def bench_argv(*args) -> list[str]:
    """The command line of `bench ARGS` in a subprocess: this Python, `-m bench`."""
    return [sys.executable, "-m", "bench", *map(str, args)]


def bench(*args, check=False, **kw):
    """`bench ARGS` in a subprocess, for what needs a process of its own: DDP, kill -9, the README's example."""
    return run(bench_argv(*args), check=check, **kw)


def set_params(repo, **sections):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        p[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def crash_after_epoch(monkeypatch, epoch: int, run) -> None:
    """`run()` (a training) crashing at the end of training epoch `epoch`, after that epoch's checkpoint:
    a kill or a preemption, in this process. The crash is undone afterwards."""
    import pytest

    from bench.train import callbacks

    end_of_epoch = callbacks.Divergence.on_train_epoch_end

    def crash(self, trainer, module):
        end_of_epoch(self, trainer, module)
        if trainer.current_epoch == epoch:
            raise RuntimeError("crashed")

    monkeypatch.setattr(callbacks.Divergence, "on_train_epoch_end", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        run()
    monkeypatch.setattr(callbacks.Divergence, "on_train_epoch_end", end_of_epoch)


def benchmark_tool(name: str):
    """A script of benchmarks/ (they are not a package) as a module, e.g. benchmark_tool("wheels")."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
