"""The dataset formats `bench prepare` reads: official CIFAR archives, ImageFolder trees or archives, the digits.

Untrusted input is read within budgets, running nothing: files in bounded chunks against a byte budget, pickles
by an unpickler allowing only what official batches hold, images measured from their headers against the pixel
budget before any is decoded. A folder and its tar archive read alike and give the same content checksum.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import pickle
import signal
import stat
import tarfile
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from bench.files import MIB, Budget, file_md5, open_tar, read_regular  # noqa: F401 (file_md5: readers.file_md5)

DIGITS_TEST = 360  # the last 360 digits (about 20%, the later writers) form the test split
DECODE_PIXELS = 1 << 24  # images decoded at a time: 48 MB of RGB in flight
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


def _numeric(*spec) -> np.dtype:
    dtype = np.dtype(*spec)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing a numpy array of dtype {dtype}: CIFAR holds numbers only")
    return dtype


def _ndarray(*args):  # what the name numpy.ndarray unpickles to: _reconstruct's argument; called, it refuses
    raise pickle.UnpicklingError("refusing a call of numpy.ndarray: arrays come only in numpy's own pickled form")


def _reconstruct(subtype, shape, typecode) -> np.ndarray:
    if subtype is not _ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError("refusing a numpy array not in numpy's own pickled form")
    return np.ndarray((0,), np.int8)  # empty; the pickle's BUILD then sets its shape and dtype over its own bytes


class CifarUnpickler(pickle.Unpickler):
    """Only what an official CIFAR batch holds: dicts, lists, bytes, str, numbers and numeric numpy arrays.
    The callables numpy's pickles name are replaced by checked ones, each array built over bytes already read
    within the Budget (a declared shape must match them); numpy.ndarray itself is never called (called, one byte
    makes a zero-stride array of any size). Anything else (a `__reduce__` naming os.system) is refused unrun."""

    SAFE = {
        "_reconstruct": _reconstruct,
        "scalar": lambda dtype, data: np.frombuffer(data, _numeric(dtype), count=1)[0],
        "_frombuffer": lambda buf, dtype, shape, order: np.frombuffer(buf, _numeric(dtype)).reshape(shape, order=order),
    }
    MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")

    def find_class(self, module: str, name: str):
        if module in self.MODULES and name in self.SAFE:
            return self.SAFE[name]
        if module == "numpy" and name in ("ndarray", "dtype"):
            return _ndarray if name == "ndarray" else _numeric
        raise pickle.UnpicklingError(
            f"refusing {module}.{name}: a CIFAR batch holds only dicts, lists, bytes, numbers and numpy arrays"
        )


def _batch(where: str, batch, spec: Cifar, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(data, labels) of one unpickled batch, their types and ranges checked exactly: nothing is cast."""
    key = spec.label_key.decode()
    x, y = (batch.get(k) for k in (b"data", spec.label_key)) if isinstance(batch, dict) else (None, None)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise ValueError(f"{where}: field data is {getattr(x, 'dtype', type(x).__name__)}, not uint8 pixels")
    if isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu":
        y = y.tolist()
    if not isinstance(y, list) or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y):
        raise ValueError(f"{where}: field {key} is not a list of integer labels")
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
        raise ValueError(f"{where}: {x.shape} pixels, {len(y)} labels; the official layout is (N, 3072) and (N,)")
    if y and not 0 <= min(y) <= max(y) < n_classes:
        raise ValueError(f"{where}: field {key} holds labels {min(y)}..{max(y)} for {n_classes} classes")
    return x, np.array(y, np.int64)


def _class_names(path: Path, spec: Cifar, meta) -> list[str]:
    where = f"{path}: {spec.folder}/{spec.meta} field {spec.names_key.decode()}"
    names = meta.get(spec.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(c, (bytes, str)) for c in names):
        raise ValueError(f"{where}: lacks its class names (a list of bytes)")
    try:
        return [c.decode() if isinstance(c, bytes) else c for c in names]
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: a class name is not UTF-8 ({e.reason} at byte {e.start})") from None


def read_cifar(path: Path, spec: Cifar, max_total_pixels: int) -> tuple[np.ndarray, ...]:
    """Read an official CIFAR archive in memory: (train_x, train_y, test_x, test_y, class names)."""
    wanted = {f"{spec.folder}/{n}" for n in (*spec.train, spec.test, spec.meta)}
    # 3 bytes a pixel, a third more for the labels and file names and pickling: CIFAR-10's batches are 30 MB
    budget = Budget(4 * max_total_pixels + MIB, 4 * max_total_pixels + MIB, f"data.max_total_pixels={max_total_pixels}")
    found = {}
    with open_tar(path) as tar:
        try:
            for m in tar:
                if m.name in wanted and m.isfile():
                    found[m.name] = budget.read(tar.extractfile(m), path, m.name)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise ValueError(f"{path} is not a readable CIFAR archive ({type(e).__name__}: {e})") from None
    for name, data in found.items():
        try:
            found[name] = CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
        except Exception as e:  # whatever a crafted pickle raises, it is not an official batch
            raise ValueError(f"{path}: {name} is not a CIFAR pickle ({type(e).__name__}: {e})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path} is missing {', '.join(missing)}: not an official {spec.folder} archive")
    classes = _class_names(path, spec, found[f"{spec.folder}/{spec.meta}"])

    def arrays(names):
        parts = [_batch(f"{path}: {spec.folder}/{n}", found[f"{spec.folder}/{n}"], spec, len(classes)) for n in names]
        return np.concatenate([x for x, _ in parts]).reshape(-1, 3, 32, 32), np.concatenate([y for _, y in parts])

    return (*arrays(spec.train), *arrays([spec.test]), classes)


def _die_with_parent() -> None:
    """A decoding worker ends when `bench prepare` does, kill -9 included (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the worker ends with the pool instead
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _image(item: tuple[str, bytes], decode: bool = False):
    """An image's (width, height) from its header alone, or decoded: (H, W, 3) uint8."""
    from PIL import Image

    name, data = item
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")) if decode else im.size
    except Exception as e:  # PIL raises many types for a bad file
        raise ValueError(f"unreadable image {name} ({e})") from None


def _imagefolder_files(path: Path, budget: Budget) -> tuple[dict[str, bytes], set[str]]:
    """({relative path: bytes} of every image, the class folders) under train/ and test/, from a folder or a
    tar archive, alike: regular files and hard links count; symbolic links, FIFOs and devices are refused."""
    files, folders, odd = {}, set(), None
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel, mode = p.relative_to(path).as_posix(), p.lstat().st_mode
            if stat.S_ISDIR(mode):
                folders.add(rel)
            elif not stat.S_ISREG(mode):
                odd = odd or (rel, "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file (a FIFO or device)")
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                files[rel] = read_regular(p, budget, path, rel)
    else:
        with open_tar(path) as tar:
            try:
                for m in tar:
                    name = m.name.removeprefix("./").rstrip("/")
                    if m.isdir():
                        folders.add(name)
                    elif not (m.isfile() or m.islnk()):
                        odd = odd or (name, "a symbolic link" if m.issym() else "not a regular file (a FIFO or device)")
                    elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        files[name] = budget.read(tar.extractfile(m), path, name)
            except (tarfile.TarError, EOFError, zlib.error, OSError, KeyError) as e:
                raise ValueError(f"{path} is not a readable archive ({type(e).__name__}: {e})") from None
    if odd:
        raise ValueError(f"{path}: {odd[0]} is {odd[1]}; an ImageFolder holds files and folders only")
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


def _measure(path: Path, names: list[str], sizes: list[tuple[int, int]], max_image: int, max_total: int) -> None:
    """Refuse, from the headers alone, an image over data.max_image_pixels, a dataset over data.max_total_pixels
    and images of more than one size: the decoded dataset is allocated only after this."""
    for n, (w, h) in zip(names, sizes):
        if w * h > max_image:
            raise ValueError(f"{path}: {n} is {w} x {h} pixels, over data.max_image_pixels={max_image}")
    if (total := sum(w * h for w, h in sizes)) > max_total:
        raise ValueError(f"{path}: {len(names)} images, {total} pixels, over data.max_total_pixels={max_total}")
    counts = Counter(sizes)
    if len(counts) > 1:
        odd = next(n for n, s in zip(names, sizes) if s != counts.most_common(1)[0][0])
        raise ValueError(f"{path}: images differ in size ({', '.join(map(str, counts))}), e.g. {odd}")


def _decode_all(path: Path, pool, names: list[str], files: dict[str, bytes], w: int, h: int) -> np.ndarray:
    """The images as one (N, 3, H, W) uint8 array, allocated once and filled a bounded batch at a time."""
    x = np.empty((len(names), 3, h, w), np.uint8)
    step = max(1, DECODE_PIXELS // (w * h))
    for i in range(0, len(names), step):
        for j, im in enumerate(pool.map(partial(_image, decode=True), [(n, files[n]) for n in names[i : i + step]]), i):
            if im.shape != (h, w, 3):
                raise ValueError(f"{path}: {names[j]} decodes to {im.shape[1]} x {im.shape[0]}, not its header's size")
            x[j] = im.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return x


def read_imagefolder(path: Path, expected_md5: str | None, max_image_pixels: int, max_total_pixels: int) -> Raw:
    """train/<class>/* and test/<class>/*, all of one size. The checksum is of the content: md5 over the
    sorted relative paths and bytes, so a folder and its archive share it."""
    # a file takes at most 8 bytes a pixel (16-bit RGBA, uncompressed) and a header: the byte budgets
    per_file, total = (8 * n + MIB for n in (max_image_pixels, max_total_pixels))
    files, folders = _imagefolder_files(path, Budget(per_file, total, f"data.max_image_pixels={max_image_pixels}"))
    h = hashlib.md5()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    md5 = h.hexdigest()
    if expected_md5 is not None and md5 != expected_md5.lower():
        raise ValueError(f"checksum mismatch for {path}: expected content md5 {expected_md5}, got {md5}")
    by_split = _check_layout(path, files, folders)
    classes = sorted({c for c, _ in by_split["train"]})
    if not classes:
        raise ValueError(f"{path} holds no training images under train/<class>/")
    if (test_classes := sorted({c for c, _ in by_split["test"]})) != classes:
        raise ValueError(f"{path}: test classes {test_classes} differ from train classes {classes}")
    names = [n for s in ("train", "test") for _, n in by_split[s]]
    with ProcessPoolExecutor(min(4, os.cpu_count() or 1), initializer=_die_with_parent) as pool:
        sizes = list(pool.map(_image, ((n, files[n]) for n in names), chunksize=2048))
        _measure(path, names, sizes, max_image_pixels, max_total_pixels)
        x = _decode_all(path, pool, names, files, *sizes[0])
    y = np.array([classes.index(c) for s in ("train", "test") for c, _ in by_split[s]], np.int64)
    k = len(by_split["train"])
    return Raw(x[:k], y[:k], x[k:], y[k:], classes, md5, flip=True, pad=max(1, x.shape[-1] // 8))
