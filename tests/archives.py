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
