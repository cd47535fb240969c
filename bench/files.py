"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one. Untrusted files
read within a byte budget, regular files only; temporary files of killed runs tidied; URLs redacted.

The temporary name is unique to the process and sits beside the target, so the final rename never
crosses a filesystem and two processes never write the same temporary file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


MIB = 1 << 20


@dataclass
class Budget:
    """The bytes a source may still have read from it, a file at a time, so that a small archive holding a huge
    member of zeros is refused after a bounded read, never read whole. Set from the pixel budgets (see read_cifar
    and read_imagefolder), which the refusal names."""

    per_file: int
    left: int
    knob: str

    def read(self, f: IO[bytes], where: Path, name: str) -> bytes:
        limit, size, chunks = min(self.per_file, self.left), 0, []
        while chunk := f.read(min(MIB, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"{where}: {name} is over {limit} bytes, more than {self.knob} allows; refused")
            chunks.append(chunk)
        self.left -= size
        return b"".join(chunks)


def read_regular(path: Path, budget: Budget, where: Path, name: str) -> bytes:
    """A regular file's bytes within `budget`; a FIFO (whose read waits forever), a device (/dev/zero reads
    without end) or a link is refused. Opened first and checked after, so it cannot be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ValueError(f"{where}: {name} cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{where}: {name} is not a regular file (a FIFO or device)")
        return budget.read(f, where, name)


def open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        kind = "a zip archive, not a tar" if zipfile.is_zipfile(path) else f"not a readable tar ({type(e).__name__})"
        raise ValueError(f"{path} is {kind}: give a .tar, .tar.gz, .tar.bz2 or .tar.xz archive") from None


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
            remove(old)
            done.append(f"removed {old.name}, the previous {out.name} an interrupted run had set aside")
    for tmp in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        remove(tmp)
        done.append(f"removed {tmp.name}, the unfinished output of an interrupted run")
    return done


def remove(path: Path) -> None:
    """Remove a file, a link or a folder tree; what is already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


TEMPORARY = re.compile(r"\.(.+)\.(\d+)\.(tmp|old)")  # temporary()'s and replace_dir()'s names: .NAME.PID.tmp


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(folder: Path) -> list[str]:
    """Remove the temporary files and folders (.NAME.PID.tmp, .NAME.PID.old) that processes killed mid-write
    left in `folder`; a running process's are kept. Returns the names removed, to say."""
    if not folder.is_dir():
        return []
    stale = []
    for path in sorted(folder.iterdir()):
        m = TEMPORARY.fullmatch(path.name)
        if m and int(m[2]) != os.getpid() and not alive(int(m[2])):
            remove(path)
            stale.append(path.name)
    return stale


def redact(url: str) -> str:
    """`url` without its credentials: user:password@ and query values become ***, to record or show it."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = f"***@{netloc}"
    query = re.sub(r"=[^&]*", "=***", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


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
    with _open_lock(folder / LOCK) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ValueError(
                f"{folder} is in use by process {f.read(64).strip() or '(unknown)'}: one run at a time "
                f"writes a folder; wait for it, or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()  # the lock file itself: _open_lock refused links, and anything but a plain file
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def _open_lock(path: Path) -> IO:
    """The lock file, opened without following a symbolic link and refused unless a plain file of one name
    (a planted link, hard or symbolic, would have the lock's PID written over its target)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ValueError(f"{path} cannot be opened as a lock file ({e.strerror}): remove it and rerun") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise ValueError(f"{path} is not a plain file (a link, a FIFO or a device): remove it and rerun")
    return os.fdopen(fd, "r+")
