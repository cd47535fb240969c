"""What a result was produced with: library versions, hardware, git commit. Recorded with every run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from bench import params_file

PACKAGES = ("torch", "lightning", "torchmetrics", "numpy", "dvc", "wandb")
# what decides a result: a change here is a "dirty" tree; the pipeline's own outputs (runs/, report/, dvc.lock)
# are not, since `make run` writes them while it runs
SOURCES = ("bench", "params.yaml", "dvc.yaml", "pyproject.toml", "presets")


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions, hardware and git state of this process's machine and checkout; `dirty`: whether the code or
    config (SOURCES) differs from the commit."""
    versions = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if gpus:
        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version()
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCES)
    return {
        "versions": versions,
        "hardware": {**cpu_type(), "cpu_count": os.cpu_count(), "gpus": gpus, "platform": platform.platform()},
        "git": {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None},
    }


def cpu_type() -> dict:
    """The CPU model and the vector kernels torch dispatches to on it (AVX2, AVX512, ...): the two things, with
    the thread count and the versions, that decide a CPU run's bits. The same cell on another CPU type gives
    other bits, and another draw of a noisy process: compare claims, not digits."""
    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def same_cpu_type(a: dict, b: dict) -> bool:
    """Whether two env.json "hardware" records name the same CPU model and vector capability (where both say)."""
    return all(a[k] == b[k] for k in ("cpu", "cpu_capability") if k in a and k in b)


def committed_env(folder: Path) -> dict | None:
    """The env.json git's HEAD holds for a cell's folder (the committed result's), or None."""
    top = _git("rev-parse", "--show-toplevel")
    try:
        relative = (folder / "env.json").resolve().relative_to(top) if top else None
    except ValueError:  # a folder outside the checkout
        return None
    text = _git("show", f"HEAD:{relative.as_posix()}") if relative else None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def other_cpu_note(folder: Path, name: str) -> str | None:
    """A line to print when a cell is retrained on another CPU type than the result it replaces (the folder's
    env.json, or else the committed one) came from: the bits will differ, the claims should not."""
    before = None
    try:
        before = json.loads((folder / "env.json").read_text())
    except (OSError, ValueError):
        before = committed_env(folder)
    hardware = (before or {}).get("hardware")
    if not isinstance(hardware, dict) or same_cpu_type(hardware, cpu_type()):
        return None
    was, now = hardware, cpu_type()
    capability = was.get("cpu_capability", "capability not recorded")
    return (
        f"{name}: the result this replaces came from {was.get('cpu')} ({capability}); this is {now['cpu']} "
        f"({now['cpu_capability']}). Its digits will differ; the report's claims (report/claims.json) should not."
    )


def flat(tree: dict, prefix: str = "") -> dict:
    """{'train.lr': 0.05, ...} from a params tree."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def params_changes(path: Path) -> list[str]:
    """How the params file `path` differs from the one git's HEAD holds: ['train.lr: 0.05 -> 0.1', ...]; [] where
    they agree, or where git has no committed copy of it (a file outside the checkout, or a new one)."""
    top = _git("rev-parse", "--show-toplevel")
    try:
        relative = Path(path).resolve().relative_to(top) if top else None
    except ValueError:
        return []
    committed = _git("show", f"HEAD:{relative.as_posix()}") if relative else None
    if committed is None:
        return []
    try:
        before, now = flat(params_file.parse(committed) or {}), flat(params_file.read(Path(path)))
    except Exception:  # HEAD's copy does not parse (ValueError, YAMLError): nothing to compare against
        return []
    return [
        f"{k}: {before.get(k)} -> {now.get(k)}"
        for k in sorted(before.keys() | now.keys())
        if before.get(k) != now.get(k)
    ]


def params_note(path: Path) -> str | None:
    """A line that says which values of the params file are not the committed ones (an experiment's leftovers, or
    an edit), or None."""
    changes = params_changes(path)
    if not changes:
        return None
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    return f"{path} differs from git HEAD's: {shown}"
