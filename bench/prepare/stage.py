"""The prepare stage, `bench prepare`: a dataset source -> checksum-verified, prepared uint8 arrays and a meta.json.

Sources are the official archive URL (downloaded with retries into data/raw/), a local file or folder,
or a DVC-tracked file under data/raw/. The checksum is verified before anything is unpacked; a
mismatch, a corrupt archive or a malformed ImageFolder writes nothing, and the prepared folder is
swapped in whole, so a refused or interrupted prepare leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.config import Data
from bench.files import atomic, recover_dir, replace_dir, temporary
from bench.prepare.readers import CIFAR, Raw, file_md5, read_cifar, read_digits, read_imagefolder

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
            with urllib.request.urlopen(url, timeout=30) as r, atomic(dest, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
                f.flush()
                if md5 is not None:
                    verify(Path(f.name), md5)  # raising here removes the temporary file: dest stays absent
            return dest
        except OSError as e:
            if attempt == retries:
                raise ValueError(
                    f"could not download {url} after {retries} tries ({e}). Offline? Fetch it on a machine with "
                    f"internet and pass data.source=PATH, or `dvc pull` it into data/raw/"
                ) from None
            time.sleep(attempt)  # back off 1 s, 2 s, ...
    raise AssertionError


def resolve_source(cfg: Data, raw_dir: Path) -> Path:
    """The local path of the dataset's source, downloading the official archive when there is none."""
    src = cfg.source
    if src is None and cfg.name in CIFAR:
        src = CIFAR[cfg.name].url
    if src is None:
        raise ValueError(f"data.source is required for data.name={cfg.name}")
    if src.startswith(("http://", "https://")):
        dest = raw_dir / src.rsplit("/", 1)[-1]
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
        return read_imagefolder(path, cfg.md5, cfg.max_image_pixels, cfg.max_total_pixels)
    spec = CIFAR[cfg.name]
    if path.is_dir():
        raise ValueError(f"data.source {path} is a folder; {cfg.name} reads the official .tar.gz archive")
    md5 = verify(path, cfg.md5 or spec.md5)
    train_x, train_y, test_x, test_y, classes = read_cifar(path, spec)
    return Raw(train_x, train_y, test_x, test_y, classes, md5, flip=True, pad=4)


def split_val(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pinned (train, val) indices into a training split of n images."""
    if not 0 <= val_size < n:
        raise ValueError(f"data.val_size={val_size} must be between 0 and the {n} training images")
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale of uint8 images (N, C, H, W), in chunks to bound memory."""
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        c = x[i : i + chunk].astype(np.float64) / 255
        total += c.sum(axis=(0, 2, 3))
        squares += (c * c).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    return mean.tolist(), np.sqrt(squares / n - mean**2).tolist()


def _compact_lists(text: str) -> str:
    """Indented JSON with each flat list on one line, so the split indices do not take a line each."""
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def prepare(cfg: Data, out: str | os.PathLike, raw_dir: Path = Path("data/raw")) -> dict:
    """Write out/images.npz and out/meta.json for `cfg`, replacing a previous `out` only once complete.
    What a killed prepare left beside `out` is restored or removed first, and said."""
    for message in recover_dir(Path(out)):
        print(f"bench prepare: {message}", flush=True)
    raw = read(cfg, raw_dir)
    train_idx, val_idx = split_val(len(raw.train_y), cfg.val_size)
    mean, std = channel_stats(raw.train_x[train_idx])
    meta = {
        "name": cfg.name,
        "source": cfg.source,
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
