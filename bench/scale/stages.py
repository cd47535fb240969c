"""dvc.yaml's train stage as commands: what `bench grid` runs on this machine and `bench slurm` on a cluster.

Both run exactly the command dvc.yaml declares for a cell, so a cell trained outside `dvc repro`
is the one DVC would have trained, and `dvc commit` can record it.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import yaml

from bench.record import Cell


def stage_template(dvc_yaml: str | Path = "dvc.yaml") -> str:
    """The train stage's command as dvc.yaml declares it, on one line, with its ${item.*} placeholders."""
    return " ".join(yaml.safe_load(Path(dvc_yaml).read_text())["stages"]["train"]["cmd"].split())


def substitute(template: str, variant: str, depth: str | int, seed: str | int) -> str:
    """`template` with its matrix item's placeholders replaced, as `dvc repro` would."""
    for key, value in (("variant", variant), ("depth", depth), ("seed", seed)):
        template = template.replace(f"${{item.{key}}}", str(value))
    return template


def stage_command(cell: Cell, dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """The train stage's command for `cell`, as argv, its program resolved by `executable`."""
    name, *args = shlex.split(substitute(stage_template(dvc_yaml), *cell))
    return [*executable(name), *args]


def executable(name: str) -> list[str]:
    """The command for `name`: beside this Python (its venv) first, then on PATH; bench also as `python -m bench`."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return [str(here)]
    if found := shutil.which(name):
        return [found]
    if name == "bench":
        return [sys.executable, "-m", "bench"]
    raise RuntimeError(f"{name} not found beside {sys.executable} or on PATH: install the project (make setup)")


def declared(stage: dict, kinds=("outs", "metrics", "plots")) -> list[tuple[str, dict]]:
    """A stage's (path, options) for each output of `kinds`, as dvc.yaml declares them."""
    found = []
    for kind in kinds:
        for out in stage.get(kind, []):
            path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            found.append((path, options or {}))
    return found
