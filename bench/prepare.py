"""The prepare stage, `bench prepare`: a dataset source -> checksum-verified, prepared uint8 arrays plus a small meta.json.

Sources are the official archive URL (downloaded with retries into data/raw/), a local file or folder,
or a DVC-tracked file under data/raw/. The checksum is verified before anything is unpacked; a
mismatch, a corrupt archive or a malformed ImageFolder writes nothing, and the prepared folder is
swapped in whole, so a refused or interrupted prepare leaves the previous one intact.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tarfile
import time
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import Data
from bench.files import atomic, replace_dir, temporary

SPLIT_SEED = 0  # the validation split is drawn with this fixed seed, whatever the run's seed
DIGITS_TEST = 360  # the last 360 digits (about 20%, the later writers) form the test split
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Cifar:
    """An official python-version CIFAR archive (Krizhevsky 2009)."""

    url: str
    md5: str
    folder: str  # the archive's top folder
    train: tuple[str, ...]  # pickles holding the training split, in order
    test: str
    meta: str
    label_key: bytes
    names_key: bytes


CIFAR = {
    "cifar10": Cifar("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                     "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                     "batches.meta", b"labels", b"label_names"),
    "cifar100": Cifar("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                      "cifar-100-python", ("train",), "test", "meta", b"fine_labels", b"fine_label_names"),
}
DATASETS = ("digits", *CIFAR, "imagefolder")


@dataclass
class Raw:
    """A dataset's official splits as arrays, before the validation split is drawn."""

    train_x: np.ndarray  # (N, C, H, W) uint8
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    md5: str  # the source's checksum (the archive's, or the ImageFolder's content)
    flip: bool  # horizontal flips suit natural images, not digits
    pad: int  # random-crop padding in pixels


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str) -> str:
    actual = file_md5(path)
    if actual != expected.lower():
        raise ValueError(f"checksum mismatch for {path}: expected md5 {expected}, got {actual}")
    return actual


def download(url: str, dest: Path, retries: int = 3) -> Path:
    """Fetch `url` to `dest` (atomically), retrying with back-off; a clear error when offline."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=30) as r, atomic(dest, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
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
        return dest if dest.exists() else download(src, dest)
    path = Path(src)
    if not path.exists():
        hint = f" (a .dvc file is there: run `dvc pull {path}.dvc`)" if Path(f"{path}.dvc").exists() else ""
        raise ValueError(f"data.source {path} does not exist{hint}")
    return path


def read_cifar(path: Path, spec: Cifar) -> tuple[np.ndarray, ...]:
    """Read an official CIFAR archive in memory: (train_x, train_y, test_x, test_y, class names)."""
    wanted = {f"{spec.folder}/{n}" for n in (*spec.train, spec.test, spec.meta)}
    found = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.name in wanted and m.isfile():
                    found[m.name] = pickle.loads(tar.extractfile(m).read(), encoding="bytes")
    except (tarfile.TarError, EOFError, zlib.error, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path} is not a readable CIFAR archive ({type(e).__name__}: {e})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path} is missing {', '.join(missing)}: not an official {spec.folder} archive")

    def arrays(names):
        try:
            x = np.concatenate([np.asarray(found[f"{spec.folder}/{n}"][b"data"], np.uint8) for n in names])
            y = np.concatenate([np.asarray(found[f"{spec.folder}/{n}"][spec.label_key], np.int64) for n in names])
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: a batch file lacks the official fields ({e})") from None
        return x.reshape(-1, 3, 32, 32), y

    classes = [c.decode() for c in found[f"{spec.folder}/{spec.meta}"][spec.names_key]]
    return (*arrays(spec.train), *arrays([spec.test]), classes)


def _decode(item: tuple[str, bytes]) -> np.ndarray:
    from PIL import Image

    name, data = item
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for a bad file
        raise ValueError(f"unreadable image {name} ({e})") from None


def _imagefolder_files(path: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every image under train/ and test/, from a folder or a tar archive."""
    files = {}
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                files[p.relative_to(path).as_posix()] = p.read_bytes()
        return files
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    files[m.name.removeprefix("./")] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ValueError(f"{path} is not a readable archive ({type(e).__name__}: {e})") from None
    return files


def read_imagefolder(path: Path, expected_md5: str | None) -> Raw:
    """train/<class>/* and test/<class>/*, all of one size. The checksum is of the content: md5 over the
    sorted relative paths and bytes, so a folder and its archive share it."""
    files = _imagefolder_files(path)
    h = hashlib.md5()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    md5 = h.hexdigest()
    if expected_md5 is not None and md5 != expected_md5.lower():
        raise ValueError(f"checksum mismatch for {path}: expected content md5 {expected_md5}, got {md5}")
    if path.is_dir():  # empty class folders hold no files, so look at the folders themselves
        for split in ("train", "test"):
            for d in sorted((path / split).glob("*")) if (path / split).is_dir() else []:
                if d.is_dir() and not any(f.startswith(f"{split}/{d.name}/") for f in files):
                    raise ValueError(f"class folder {path / split / d.name} holds no images")
    by_split: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for name in sorted(files):
        parts = name.split("/")
        if len(parts) != 3 or parts[0] not in by_split:
            raise ValueError(f"{path}: {name} is not in the train/<class>/<image> or test/<class>/<image> layout")
        by_split[parts[0]].append((parts[1], name))
    classes = sorted({c for c, _ in by_split["train"]})
    test_classes = sorted({c for c, _ in by_split["test"]})
    if not classes:
        raise ValueError(f"{path} holds no training images under train/<class>/")
    if test_classes != classes:
        raise ValueError(f"{path}: test classes {test_classes} differ from train classes {classes}")
    names = [n for s in ("train", "test") for _, n in by_split[s]]
    with ProcessPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        images = list(pool.map(_decode, ((n, files[n]) for n in names), chunksize=2048))
    sizes = Counter(im.shape for im in images)
    if len(sizes) > 1:
        odd = next(n for n, im in zip(names, images) if im.shape != sizes.most_common(1)[0][0])
        raise ValueError(f"{path}: images differ in size ({', '.join(map(str, sizes))}), e.g. {odd}")
    x = np.stack(images).transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    y = np.array([classes.index(c) for s in ("train", "test") for c, _ in by_split[s]], np.int64)
    k = len(by_split["train"])
    return Raw(x[:k], y[:k], x[k:], y[k:], classes, md5, flip=True, pad=max(1, x.shape[-1] // 8))


def read_digits() -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8), 0..16 -> 0..255
    y = d.target.astype(np.int64)
    k = len(y) - DIGITS_TEST
    md5 = hashlib.md5(x.tobytes() + y.tobytes()).hexdigest()
    return Raw(x[:k], y[:k], x[k:], y[k:], [str(c) for c in range(10)], md5, flip=False, pad=1)


def read(cfg: Data, raw_dir: Path = Path("data/raw")) -> Raw:
    """Resolve, verify and read the dataset named by `cfg`; raise ValueError before writing anything."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; valid datasets: {', '.join(DATASETS)}")
    if cfg.name == "digits":
        return read_digits()
    path = resolve_source(cfg, raw_dir)
    if cfg.name == "imagefolder":
        return read_imagefolder(path, cfg.md5)
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
    """Write out/images.npz and out/meta.json for `cfg`, replacing a previous `out` only once complete."""
    raw = read(cfg, raw_dir)
    train_idx, val_idx = split_val(len(raw.train_y), cfg.val_size)
    mean, std = channel_stats(raw.train_x[train_idx])
    meta = {
        "name": cfg.name, "source": cfg.source, "md5": raw.md5, "classes": raw.classes,
        "shape": list(raw.train_x.shape[1:]),
        "counts": {"train": len(train_idx), "val": len(val_idx), "test": len(raw.test_y)},
        "val_size": cfg.val_size, "split_seed": SPLIT_SEED,
        "mean": mean, "std": std, "flip": raw.flip, "pad": raw.pad,
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
