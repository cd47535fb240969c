"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

The temporary name is unique to the process and sits beside the target, so the final rename never
crosses a filesystem and two processes never write the same temporary file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temporary(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic(path: str | os.PathLike, mode: str = "w", **kw) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path`, on an error it is removed."""
    path = Path(path)
    tmp = temporary(path)
    try:
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def recover_dir(out: Path) -> list[str]:
    """Tidy what a killed `replace_dir` writer left beside `out`: its unfinished folder is removed, and a
    previous `out` it had moved aside is put back where `out` is missing. Returns what was done, to say."""
    done = []
    for old in sorted(out.parent.glob(f".{out.name}.*.old")):
        if not out.exists():
            os.replace(old, out)
            done.append(f"restored {out} from {old.name}, left by an interrupted run")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}, the previous {out.name} an interrupted run had set aside")
    for tmp in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        done.append(f"removed {tmp.name}, the unfinished output of an interrupted run")
    return done


def replace_dir(new: Path, out: Path) -> None:
    """Swap the complete folder `new` in at `out`; the previous `out`, if any, is removed after the swap."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


LOCK = ".bench.lock"  # in .gitignore and .dvcignore: a run's presence, not a result


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock (flock on folder/.bench.lock, released by the OS even on kill -9) while the
    block runs; if another process holds it, a ValueError names that process."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ValueError(
                f"{folder} is in use by process {f.read().strip() or '(unknown)'}: one run at a time "
                f"writes a folder; wait for it, or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
