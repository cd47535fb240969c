"""The dataset formats `bench prepare` reads: official CIFAR archives, ImageFolder trees or archives, the digits.

Untrusted input is read without executing anything: CIFAR's pickles go through an unpickler that
allows only what the official batches hold, and images are measured from their headers, against a
pixel budget, before any is decoded. A folder and its tar archive read alike (links, empty class
folders) and give the same content checksum.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import pickle
import signal
import tarfile
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    "cifar10": Cifar(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    "cifar100": Cifar(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
    ),
}


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


class CifarUnpickler(pickle.Unpickler):
    """Only what an official CIFAR batch holds: dicts, lists, bytes, str, numbers and numpy arrays.
    Anything else (a `__reduce__` payload naming os.system, say) is refused before it runs."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: a CIFAR batch holds only dicts, lists, bytes, numbers and numpy arrays"
            )
        return super().find_class(module, name)


def read_cifar(path: Path, spec: Cifar) -> tuple[np.ndarray, ...]:
    """Read an official CIFAR archive in memory: (train_x, train_y, test_x, test_y, class names)."""
    wanted = {f"{spec.folder}/{n}" for n in (*spec.train, spec.test, spec.meta)}
    found = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.name in wanted and m.isfile():
                    found[m.name] = CifarUnpickler(tar.extractfile(m), encoding="bytes").load()
    except (
        tarfile.TarError,
        EOFError,
        zlib.error,
        OSError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        raise ValueError(f"{path} is not a readable CIFAR archive ({type(e).__name__}: {e})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path} is missing {', '.join(missing)}: not an official {spec.folder} archive")
    meta = found[f"{spec.folder}/{spec.meta}"]
    if not isinstance(meta, dict) or not isinstance(meta.get(spec.names_key), list):
        raise ValueError(f"{path}: {spec.meta} lacks its class names ({spec.names_key.decode()})")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec.names_key]]

    def arrays(names):
        try:
            x = np.concatenate([np.asarray(found[f"{spec.folder}/{n}"][b"data"], np.uint8) for n in names])
            y = np.concatenate([np.asarray(found[f"{spec.folder}/{n}"][spec.label_key], np.int64) for n in names])
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{path}: a batch file lacks the official fields ({type(e).__name__}: {e})") from None
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
            raise ValueError(
                f"{path}: {', '.join(names)} hold {x.shape} pixels and {y.shape} labels; "
                f"the official layout is (N, 3072) and (N,)"
            )
        if len(y) and not 0 <= y.min() <= y.max() < len(classes):
            raise ValueError(f"{path}: {', '.join(names)} hold labels {y.min()}..{y.max()} for {len(classes)} classes")
        return x.reshape(-1, 3, 32, 32), y

    return (*arrays(spec.train), *arrays([spec.test]), classes)


def _die_with_parent() -> None:
    """A decoding worker ends when `bench prepare` does, kill -9 included (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the worker ends with the pool instead
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _size(item: tuple[str, bytes]) -> tuple[int, int]:
    """(width, height) from an image's header, without decoding it."""
    from PIL import Image

    name, data = item
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as e:  # PIL raises many types for a bad file
        raise ValueError(f"unreadable image {name} ({e})") from None


def _decode(item: tuple[str, bytes]) -> np.ndarray:
    from PIL import Image

    name, data = item
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for a bad file
        raise ValueError(f"unreadable image {name} ({e})") from None


def _imagefolder_files(path: Path) -> tuple[dict[str, bytes], set[str]]:
    """({relative path: bytes} of every image, the class folders) under train/ and test/, from a folder or a
    tar archive, alike: regular files and hard links count, symbolic links are refused."""
    files, folders = {}, set()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                raise ValueError(f"{path}: {rel} is a symbolic link; an ImageFolder holds files and folders only")
            if p.is_dir():
                folders.add(rel)
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                files[rel] = p.read_bytes()
        return files, folders
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                name = m.name.removeprefix("./").rstrip("/")
                if m.issym():
                    raise ValueError(f"{path}: {name} is a symbolic link; an ImageFolder holds files and folders only")
                if m.isdir():
                    folders.add(name)
                elif (m.isfile() or m.islnk()) and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    files[name] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError, KeyError) as e:
        raise ValueError(f"{path} is not a readable archive ({type(e).__name__}: {e})") from None
    return files, folders


def _check_layout(path: Path, files: dict[str, bytes], folders: set[str]) -> dict[str, list[tuple[str, str]]]:
    """{split: [(class, file)]} in the train/<class>/<image> layout; an empty or oddly named class is refused."""
    by_split: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for name in sorted(files):
        parts = name.split("/")
        if len(parts) != 3 or parts[0] not in by_split or parts[1] in ("", ".", ".."):
            raise ValueError(f"{path}: {name} is not in the train/<class>/<image> or test/<class>/<image> layout")
        by_split[parts[0]].append((parts[1], name))
    for folder in sorted(folders):
        parts = folder.split("/")
        if len(parts) == 2 and parts[0] in by_split and not any(f.startswith(folder + "/") for f in files):
            raise ValueError(f"class folder {path}/{folder} holds no images")
    return by_split


def read_imagefolder(path: Path, expected_md5: str | None, max_image_pixels: int, max_total_pixels: int) -> Raw:
    """train/<class>/* and test/<class>/*, all of one size. The checksum is of the content: md5 over the
    sorted relative paths and bytes, so a folder and its archive share it."""
    files, folders = _imagefolder_files(path)
    h = hashlib.md5()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    md5 = h.hexdigest()
    if expected_md5 is not None and md5 != expected_md5.lower():
        raise ValueError(f"checksum mismatch for {path}: expected content md5 {expected_md5}, got {md5}")
    by_split = _check_layout(path, files, folders)
    classes = sorted({c for c, _ in by_split["train"]})
    test_classes = sorted({c for c, _ in by_split["test"]})
    if not classes:
        raise ValueError(f"{path} holds no training images under train/<class>/")
    if test_classes != classes:
        raise ValueError(f"{path}: test classes {test_classes} differ from train classes {classes}")
    names = [n for s in ("train", "test") for _, n in by_split[s]]
    with ProcessPoolExecutor(min(4, os.cpu_count() or 1), initializer=_die_with_parent) as pool:
        sizes = list(pool.map(_size, ((n, files[n]) for n in names), chunksize=2048))
        big = next(((n, s) for n, s in zip(names, sizes) if s[0] * s[1] > max_image_pixels), None)
        if big:
            raise ValueError(
                f"{path}: {big[0]} is {big[1][0]} x {big[1][1]} pixels, over data.max_image_pixels={max_image_pixels}"
            )
        if (total := sum(w * h for w, h in sizes)) > max_total_pixels:
            raise ValueError(
                f"{path}: {len(names)} images of {total} pixels in all, over data.max_total_pixels={max_total_pixels}"
            )
        counts = Counter(sizes)
        if len(counts) > 1:
            odd = next(n for n, s in zip(names, sizes) if s != counts.most_common(1)[0][0])
            raise ValueError(f"{path}: images differ in size ({', '.join(map(str, counts))}), e.g. {odd}")
        images = list(pool.map(_decode, ((n, files[n]) for n in names), chunksize=2048))
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
