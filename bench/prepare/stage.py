"""The prepare stage, `bench prepare`: a dataset source -> checksum-verified, prepared uint8 arrays and a meta.json.

Sources are the official archive URL (downloaded with retries into data/raw/), a local file or folder,
or a DVC-tracked file under data/raw/. The checksum is verified before anything is unpacked; a
mismatch, a corrupt archive or a malformed ImageFolder writes nothing, and the prepared folder is
swapped in whole, so a refused or interrupted prepare leaves the previous one intact.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shutil
import tarfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from bench.files import atomic, file_md5, locked, recover_dir, redact, remove_stale, replace_dir, temporary
from bench.prepare.readers import CIFAR, DIGITS_TEST, Raw, read_cifar, read_imagefolder
from bench.schema import Data

SPLIT_SEED = 0  # the validation split is drawn with this fixed seed, whatever the run's seed
DATASETS = ("digits", *CIFAR, "imagefolder")


def verify(path: Path, expected: str) -> str:
    actual = file_md5(path)
    if actual != expected.lower():
        raise ValueError(f"checksum mismatch for {path}: expected md5 {expected}, got {actual}")
    return actual


def download(url: str, dest: Path, md5: str | None, retries: int = 3) -> Path:
    """Fetch `url` to `dest`, retrying with back-off; a clear error when offline. The file is written under
    a temporary name and becomes `dest` only once its md5 matches, so a bad download is never cached
    (md5 None: an ImageFolder archive, whose content checksum is verified once it is read)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(request(url), timeout=30) as r, atomic(dest, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
                f.flush()
                # raising here removes the temporary file: dest stays absent, and the next prepare downloads again
                verify(Path(f.name), md5) if md5 is not None else verify_tar(Path(f.name), redact(url))
            return dest
        except OSError as e:
            if attempt == retries:
                raise ValueError(
                    f"could not download {redact(url)} after {retries} tries ({e}). Offline? Fetch it on a machine "
                    f"with internet and pass data.source=PATH, or `dvc pull` it into data/raw/"
                ) from None
            time.sleep(attempt)  # back off 1 s, 2 s, ...
    raise AssertionError


def request(url: str) -> urllib.request.Request:
    """A request for `url`, its user:password@ (which urllib cannot follow) sent as HTTP basic authentication."""
    parts = urllib.parse.urlsplit(url)
    req = urllib.request.Request(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
    if parts.username is not None:
        user = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        req.add_header("Authorization", f"Basic {base64.b64encode(user.encode()).decode()}")
    return req


def resolve_source(cfg: Data, raw_dir: Path) -> Path:
    """The local path of the dataset's source, downloading the official archive when there is none."""
    src = cfg.source
    if src is None and cfg.name in CIFAR:
        src = CIFAR[cfg.name].url
    if src is None:
        raise ValueError(f"data.source is required for data.name={cfg.name}")
    if src.startswith(("http://", "https://")):
        name = Path(urllib.parse.urlsplit(src).path).name  # never the credentials or the query: see files.redact
        if not name or name.startswith("."):
            raise ValueError(f"data.source {redact(src)} names no file to download")
        dest = raw_dir / name
        for stale in remove_stale(raw_dir):
            print(f"bench prepare: removed {raw_dir / stale}, left by an interrupted download", flush=True)
        md5 = (cfg.md5 or CIFAR[cfg.name].md5) if cfg.name in CIFAR else None  # ImageFolder: of the content
        return dest if dest.exists() else download(src, dest, md5)
    path = Path(src)
    if not path.exists():
        hint = f" (a .dvc file is there: run `dvc pull {path}.dvc`)" if Path(f"{path}.dvc").exists() else ""
        raise ValueError(f"data.source {path} does not exist{hint}")
    return path


def read(cfg: Data, raw_dir: Path = Path("data/raw")) -> Raw:
    """Resolve, verify and read the dataset named by `cfg`; raise ValueError before writing anything."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; valid datasets: {', '.join(DATASETS)}")
    if cfg.name == "digits":
        return read_digits()
    path = resolve_source(cfg, raw_dir)
    if cfg.name == "imagefolder":
        try:
            return read_imagefolder(path, cfg.md5, cfg.max_image_pixels, cfg.max_total_pixels)
        except ValueError as e:  # a download whose content is not data.md5's is not kept: the next prepare refetches
            if path != Path(cfg.source) and str(e).startswith("checksum mismatch"):
                path.unlink(missing_ok=True)
                raise ValueError(f"{e}; the download is not kept") from None
            raise
    spec = CIFAR[cfg.name]
    if path.is_dir():
        raise ValueError(f"data.source {path} is a folder; {cfg.name} reads the official .tar.gz archive")
    md5 = verify(path, cfg.md5 or spec.md5)
    train_x, train_y, test_x, test_y, classes = read_cifar(path, spec, cfg.max_total_pixels)
    return Raw(train_x, train_y, test_x, test_y, classes, md5, flip=True, pad=4)


def split_val(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pinned (train, val) indices into a training split of n images."""
    if not 0 <= val_size < n:
        raise ValueError(f"data.val_size={val_size} must be between 0 and the {n} training images")
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def channel_stats(x: np.ndarray, idx: np.ndarray, chunk: int = 1 << 22) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale of the uint8 images x[idx] (N, C, H, W), from each channel's
    histogram of its 256 values, counted a chunk of about `chunk` pixels a channel at a time: no float copy of
    the images is made. The sums are integers and each statistic is one correctly rounded division (and a
    square root), so the digits are the same on every machine: a float dot product's rounding depends on the
    CPU's vector kernels, and a last digit of meta.json that differs changes the prepared data's hash, which
    would make every cell of a fresh clone stale on another CPU type."""
    counts = np.zeros((x.shape[1], 256), np.int64)
    step = max(1, chunk // (x.shape[2] * x.shape[3]))
    for i in range(0, len(idx), step):
        c = x[idx[i : i + step]]  # (n, C, H, W), a copy of at most `chunk` pixels a channel
        for channel in range(x.shape[1]):
            counts[channel] += np.bincount(c[:, channel].ravel(), minlength=256)
    means, stds = [], []
    for histogram in counts.tolist():  # Python ints: exact at any size
        n = sum(histogram)
        total = sum(k * v for v, k in enumerate(histogram))
        squares = sum(k * v * v for v, k in enumerate(histogram))
        means.append(total / (n * 255))  # int / int: the float nearest the exact mean
        stds.append(math.sqrt((n * squares - total * total) / (n * n * 255 * 255)))  # an exact variance, rounded
    return means, stds


def _compact_lists(text: str) -> str:
    """Indented JSON with each flat list on one line, so the split indices do not take a line each."""
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def verify_tar(path: Path, source: str) -> None:
    """A downloaded ImageFolder archive must read as a tar to its end (an HTML error page does not); its
    content checksum (data.md5) is checked once it is read."""
    try:
        with tarfile.open(path, "r:*") as tar:
            if not tar.getmembers():
                raise tarfile.ReadError("no members")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"the download of {source} is not a tar archive ({type(e).__name__}); not kept") from None


def check_out(out: Path) -> None:
    """--out is a folder or nothing yet: a file or a symbolic link there is refused, never replaced."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        kind = "a symbolic link" if out.is_symlink() else "a file"
        raise ValueError(
            f"--out {out} is {kind}, not a folder: bench prepare writes a folder there; choose another --out"
        )


def prepare(cfg: Data, out: str | os.PathLike, raw_dir: Path = Path("data/raw")) -> dict:
    """Write out/images.npz and out/meta.json for `cfg`, replacing a previous `out` only once complete.
    What a killed prepare left beside `out` is restored or removed first, and said. One prepare at a time
    writes an `out`: it holds the lock of .NAME.lock beside it throughout."""
    out = Path(out)
    check_out(out)
    with locked(out.with_name(f".{out.name}.lock")):
        return _prepare(cfg, out, raw_dir)


def _prepare(cfg: Data, out: Path, raw_dir: Path) -> dict:
    for message in recover_dir(out):
        print(f"bench prepare: {message}", flush=True)
    raw = read(cfg, raw_dir)
    train_idx, val_idx = split_val(len(raw.train_y), cfg.val_size)
    mean, std = channel_stats(raw.train_x, train_idx)
    meta = {
        "name": cfg.name,
        "source": cfg.source and redact(cfg.source),
        "md5": raw.md5,
        "classes": raw.classes,
        "shape": list(raw.train_x.shape[1:]),
        "counts": {"train": len(train_idx), "val": len(val_idx), "test": len(raw.test_y)},
        "val_size": cfg.val_size,
        "split_seed": SPLIT_SEED,
        "mean": mean,
        "std": std,
        "flip": raw.flip,
        "pad": raw.pad,
        "val_indices": val_idx.tolist(),  # into the official training split; the rest is train
    }
    tmp = temporary(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        np.savez(tmp / "images.npz", train_x=raw.train_x, train_y=raw.train_y, test_x=raw.test_x, test_y=raw.test_y)
        (tmp / "meta.json").write_text(_compact_lists(json.dumps(meta, indent=1)) + "\n")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def read_digits() -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8), 0..16 -> 0..255
    y = d.target.astype(np.int64)
    k = len(y) - DIGITS_TEST
    md5 = hashlib.md5(x.tobytes() + y.tobytes()).hexdigest()
    return Raw(x[:k], y[:k], x[k:], y[k:], [str(c) for c in range(10)], md5, flip=False, pad=1)
