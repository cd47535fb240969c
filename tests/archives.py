"""Build small datasets in the official layouts, so tests run the real prepare code on them."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from bench.prepare.readers import CIFAR, file_md5


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar(path: Path, name: str, train_x, train_y, test_x, test_y, classes, skip=(), compresslevel=9) -> str:
    """An official python-version CIFAR archive (pickled dicts of flat uint8 rows); returns its md5."""
    spec = CIFAR[name]
    train_parts = np.array_split(np.arange(len(train_y)), len(spec.train))
    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
        batches = [(n, idx, train_x, train_y) for n, idx in zip(spec.train, train_parts)]
        batches.append((spec.test, np.arange(len(test_y)), test_x, test_y))
        for n, idx, x, y in batches:
            if n in skip:
                continue
            d = {
                b"batch_label": n.encode(),
                spec.label_key: [int(v) for v in y[idx]],
                b"data": np.asarray(x[idx], np.uint8).reshape(len(idx), -1),
                b"filenames": [b"x.png"] * len(idx),
            }
            _add(tar, f"{spec.folder}/{n}", pickle.dumps(d))
        if spec.meta not in skip:
            _add(tar, f"{spec.folder}/{spec.meta}", pickle.dumps({spec.names_key: [c.encode() for c in classes]}))
    return file_md5(path)


def random_cifar(path: Path, name="cifar10", n_train=200, n_test=50, seed=0, **kw) -> str:
    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100
    return write_cifar(
        path,
        name,
        rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, k, n_train),
        rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, k, n_test),
        [f"class{i}" for i in range(k)],
        **kw,
    )


def write_imagefolder(
    root: Path, classes=("cat", "dog", "frog"), per_class=(6, 3), size=(12, 12), fmt="PNG", seed=0
) -> Path:
    """train/<class>/*.png and test/<class>/*.png of generated images whose colour depends on the class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (*size, 3), dtype=np.uint8) + np.uint8(
                    60 * c % 196
                )  # 0-255 for up to 10 classes
                Image.fromarray(img).save(root / split / cls / f"{i:03d}.{fmt.lower()}", fmt)
    return root


# Bombs: small archives that unpack to much more, for the memory-bound tests.


def black_pngs(path: Path, n=40, size=2000) -> Path:
    """A tar.gz of n black size x size PNGs in two classes, train and test: a few KB, n * size^2 pixels."""
    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (size, size)).save(png, "PNG")
    with tarfile.open(path, "w:gz") as tar:
        for i in range(n):
            _add(tar, f"{('train', 'test')[i % 4 == 3]}/{'ab'[i // 4 % 2]}/{i:03d}.png", png.getvalue())
    return path


def zeros_member(path: Path, name="train/a/a.png", size=1 << 30) -> Path:
    """A tar.gz holding one member of `size` zero bytes, built from repeated gzip members (a gzip file may hold
    several), so that making it compresses 64 MiB once rather than the whole member."""
    import gzip

    info = tarfile.TarInfo(name)
    info.size = size
    block = 64 << 20
    with open(path, "wb") as f:
        f.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        f.write(gzip.compress(bytes(block)) * (size // block))
        f.write(gzip.compress(bytes(size % block + 1024)))  # the rest, then two empty blocks: the tar's end
    return path


class _Reduce:
    def __init__(self, f, args):
        self.f, self.args = f, args

    def __reduce__(self):
        return self.f, self.args


def zero_stride_batch(rows=800_000) -> bytes:
    """A CIFAR batch whose data calls numpy.ndarray on one byte with zero strides: rows x 3072 bytes once copied."""
    return pickle.dumps({b"data": _Reduce(np.ndarray, ((rows, 3072), "u1", b"\0", 0, (0, 0))), b"labels": []}, 3)
