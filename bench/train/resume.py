"""Resuming a killed or preempted cell from its checkpoint, and only when the checkpoint is its own.

A checkpoint carries its run's key (bench.run_key: the params, the cell, the data checksum, the code that trains
it). So when `dvc repro` reruns a cell because its code changed, the finished checkpoint of the old code is
never resumed with no step left. A rerun with the same key resumes. Another run's checkpoint is set aside under a
new name, and stays while the new run trains. Once the new run has written its results, the set-aside checkpoints
of runs that had finished (the final checkpoint says so) are deleted: their results were the ones just replaced,
so a cell's folder holds one checkpoint however often it is retrained. Those of unfinished runs hold work recorded
nowhere else, and are never deleted. Under SLURM, Lightning's own requeue checkpoint (hpc_ckpt_N.ckpt) takes precedence.
"""

from __future__ import annotations

import json
import pickle
import re
import secrets
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.environments import SLURMEnvironment

from bench.files import atomic, write_text
from bench.record import IMAGES_PER_S, WALL_TIME
from bench.train.distributed import is_rank_zero


def set_aside(path: Path, why: str) -> Path | None:
    """Rename `path` to a free name that says why (last.ckpt -> last.WHY-1.ckpt, -2, ...); never delete or
    overwrite. A requeue checkpoint loses Lightning's "hpc_ckpt_" prefix, so that Lightning never picks it.
    Rank 0 renames (None elsewhere); the other ranks, started together by srun, decide alike from what they
    read, before or after the rename: neither resumes."""
    if not is_rank_zero():
        return None
    stem = path.stem.replace("hpc_ckpt_", "hpc-ckpt-")
    n = 1
    while (dest := path.with_name(f"{stem}.{why}-{n}{path.suffix}")).exists():
        n += 1
    path.rename(dest)
    return dest


def load(path: Path) -> dict:
    """A checkpoint, by torch's weights-only unpickler: tensors, numbers, strings and containers, never code.
    Every checkpoint this project writes loads this way. One that holds anything else was not written by it,
    and is refused (ValueError: exit 2) before any file is touched; one that cannot be read raises as it is."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = [line.strip() for line in str(e).splitlines() if "global" in line.lower()]
        if not refused:  # not a pickle at all: unreadable, not foreign
            raise
        raise ValueError(
            f"{path} holds objects other than weights ({refused[0][:100]}); it was not written by bench "
            f"and is not loaded: move it away to start the cell afresh"
        ) from None


def _key(path: Path) -> str | None:
    """The run key a checkpoint was written under; raises if it cannot be read."""
    return load(path).get("hyper_parameters", {}).get("run_key")


def requeue_checkpoints(out: Path) -> list[Path]:
    """Lightning's SLURM requeue checkpoints in `out`, latest last."""
    return sorted(out.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))


def checkpoint_to_resume(out: Path, key: str) -> tuple[str | None, str | None]:
    """(ckpt_path for Trainer.fit, a message for the user); (None, None) for a fresh start.

    A checkpoint that is not this run's is set aside under a name that says why (remove_finished_set_aside deletes
    it once this run has replaced a finished run's results). Each is read by `load`, which refuses one that holds
    code."""
    if SLURMEnvironment.detect() and (requeue := requeue_checkpoints(out)):  # Lightning resumes the latest itself
        try:
            own = _key(requeue[-1]) == key
        except ValueError:  # not ours: refused
            raise
        except Exception:
            own = False
        if own:
            return None, f"resuming from the SLURM requeue checkpoint {requeue[-1]}"
        for p in requeue:  # params, data or code changed while the job waited: start afresh
            set_aside(p, "other-run")
        if is_rank_zero():
            print(
                f"set aside {', '.join(p.name for p in requeue)}: SLURM requeue checkpoints of other "
                f"params, data, cell or code; starting afresh",
                flush=True,
            )
    last = out / "last.ckpt"
    if not last.exists():
        return None, None
    try:
        ckpt = load(last)
    except ValueError:  # not ours: refused
        raise
    except Exception as e:  # a checkpoint that cannot be read cannot be resumed
        aside = set_aside(last, "unreadable")
        return (
            None,
            f"set aside {last} as {aside and aside.name}: it cannot be read ({type(e).__name__}); starting afresh",
        )
    if ckpt.get("hyper_parameters", {}).get("run_key") != key:
        aside = set_aside(last, "other-run")
        return None, (
            f"set aside {last} as {aside and aside.name}: it belongs to other params, data, cell or code; "
            f"starting afresh"
        )
    return str(last), f"resuming from {last} at step {ckpt['global_step']}"


def remove_finished_set_aside(out: Path) -> list[str]:
    """Delete the checkpoints set aside in `out` (last.other-run-N.ckpt) whose run had finished: once a run has
    written its results, those runs' results are replaced (DVC's cache keeps the pipeline's), and their final
    checkpoints with them. Those of unfinished runs are kept, as is one this code cannot read. The names deleted."""
    removed = []
    for path in sorted(out.glob("last.other-run-*.ckpt")):
        try:
            finished = load(path).get("finished") is True
        except Exception:  # unreadable, or not ours: never deleted
            continue
        if finished:
            path.unlink()
            removed.append(path.name)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writes, made atomic on any filesystem: the temporary file is written beside
    the checkpoint and renamed over it (Lightning's own goes through a temporary folder elsewhere, and
    across filesystems its move is a copy that a full disk leaves truncated)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic(path, "wb") as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError, the OSError within
            cause = e
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            raise OSError(
                f"cannot write the checkpoint {path} ({cause or e}); the previous one, if any, is intact"
            ) from None


def recorded_timings(out: Path, key: str) -> dict:
    """The wall time and throughput that out/metrics.json records for run `key`, when it does: a finished run
    that is resumed trains no step, and keeps the timings of the run that trained it."""
    try:
        m = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(m, dict) or m.get("run_key") != key:
        return {}
    return {k: m[k] for k in (WALL_TIME, IMAGES_PER_S) if k in m}


def wandb_run_id(out: Path, resuming: bool) -> str | None:
    """The W&B run id of this cell: the same run continues on resume, a new one otherwise (rank 0; None elsewhere)."""
    if not is_rank_zero():
        return None
    path = out / "wandb_run_id"
    if resuming and path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, run_id + "\n")
    return run_id
