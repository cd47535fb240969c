"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

The temporary name is unique to the process and sits beside the target, so the final rename never
crosses a filesystem and two processes never write the same temporary file.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def replace_dir(new: Path, out: Path) -> None:
    """Swap the complete folder `new` in at `out`; the previous `out`, if any, is removed after the swap."""
    old = temporary(out).with_suffix(".old")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
