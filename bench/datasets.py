"""Dataset sources -> a prepared `Dataset` of uint8 tensors, a pinned validation split and train statistics.

The offline default is scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): real
data that installs from PyPI and needs no network at run time.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.config import Data
from bench.data import Dataset, Split

SPLIT_SEED = 0  # the validation split is drawn with this fixed seed, whatever the run's seed
DIGITS_TEST = 360  # the last 360 digits (about 20%, later writers) form the test split


def split_val(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pinned (train, val) indices into a training split of n images."""
    if not 0 <= val_size < n:
        raise ValueError(f"data.val_size={val_size} must be between 0 and the {n} training images")
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale of uint8 images (N, C, H, W)."""
    x = x.astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def from_arrays(name: str, train_x, train_y, test_x, test_y, classes, val_size: int, flip: bool, pad: int) -> Dataset:
    tr, va = split_val(len(train_y), val_size)
    mean, std = channel_stats(train_x[tr])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return Dataset(
        name=name,
        train=Split(t(train_x[tr]), t(train_y[tr]).long()),
        val=Split(t(train_x[va]), t(train_y[va]).long()),
        test=Split(t(test_x), t(test_y).long()),
        classes=list(classes), mean=mean, std=std, flip=flip, pad=pad,
    )


def digits(val_size: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8), 0..16 -> 0..255
    y = d.target.astype(np.int64)
    k = len(y) - DIGITS_TEST
    return from_arrays("digits", x[:k], y[:k], x[k:], y[k:], [str(c) for c in range(10)], val_size,
                       flip=False, pad=1)


def load(cfg: Data) -> Dataset:
    loaders = {"digits": digits}
    if cfg.name not in loaders:
        raise ValueError(f"unknown dataset {cfg.name!r}; valid datasets: {', '.join(loaders)}")
    return loaders[cfg.name](cfg.val_size)
