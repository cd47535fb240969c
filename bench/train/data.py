"""GPU-resident data: each split is one uint8 tensor on the training device, moved there once.

Batches are drawn by index and augmented per sample, in batch, on the device (random crop with
padding, horizontal flip where the dataset suits it), as in airbench; no DataLoader, no PIL.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.files import redact
from bench.schema import Data


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64


@dataclass
class Dataset:
    """A prepared dataset: the three splits plus what augmentation and normalisation need."""

    name: str
    md5: str  # the source's checksum, as verified by `bench prepare`
    train: Split
    val: Split
    test: Split
    classes: list[str]
    mean: list[float]  # per channel, on the 0..1 scale, computed on the training split
    std: list[float]
    flip: bool  # horizontal flips suit natural images, not digits
    pad: int  # random-crop padding in pixels (4 for 32 px CIFAR)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])


def load_prepared(path: str | Path, cfg: Data) -> Dataset:
    """Read what `bench prepare` wrote; refuse data that disagrees with params (stale), never download."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise ValueError(f"no prepared data at {path}: run `bench prepare --out {path}` (or `dvc repro prepare`)")
    rerun = "rerun `bench prepare` or `dvc repro prepare`"
    try:
        meta = json.loads((path / "meta.json").read_text())
        wanted = {"name": cfg.name, "source": cfg.source and redact(cfg.source), "val_size": cfg.val_size}
        stale = [f"data.{k}={v!r} but prepared {meta[k]!r}" for k, v in wanted.items() if v != meta[k]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path / 'meta.json'} is not what bench prepare writes ({type(e).__name__}: {e}); {rerun}"
        ) from None
    if cfg.md5 is not None and cfg.md5.lower() != meta["md5"]:
        stale.append(f"data.md5={cfg.md5!r} but prepared {meta['md5']!r}")
    if stale:
        raise ValueError(f"prepared data at {path} is stale ({'; '.join(stale)}): {rerun}")
    try:
        with np.load(path / "images.npz") as z:
            arrays = {k: torch.from_numpy(z[k]) for k in ("train_x", "train_y", "test_x", "test_y")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path / 'images.npz'} cannot be read ({type(e).__name__}: {e}); {rerun}") from None
    check(path, meta, arrays)
    val = torch.zeros(len(arrays["train_y"]), dtype=torch.bool)
    val[meta["val_indices"]] = True
    return Dataset(
        name=meta["name"],
        md5=meta["md5"],
        train=Split(arrays["train_x"][~val], arrays["train_y"][~val]),
        val=Split(arrays["train_x"][val], arrays["train_y"][val]),
        test=Split(arrays["test_x"], arrays["test_y"]),
        classes=meta["classes"],
        mean=meta["mean"],
        std=meta["std"],
        flip=meta["flip"],
        pad=meta["pad"],
    )


def _numbers(value, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(_number(v) and math.isfinite(v) for v in value)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check(path: Path, meta: dict, arrays: dict[str, torch.Tensor]) -> None:
    """Refuse prepared data that disagrees with itself or with what `bench prepare` writes, naming the file and
    field: a std of 0 or float images would train to NaN and be recorded as a diverged result."""
    x, n = arrays["train_x"], len(arrays["train_y"])
    bad = {}
    for k in ("train_x", "test_x"):
        if arrays[k].dtype != torch.uint8 or arrays[k].ndim != 4 or list(arrays[k].shape[1:]) != meta.get("shape"):
            bad[f"images.npz {k}"] = f"{arrays[k].dtype} {tuple(arrays[k].shape)}, not uint8 (N, *{meta.get('shape')})"
    for k, images in (("train_y", x), ("test_y", arrays["test_x"])):
        y = arrays[k]
        if y.dtype != torch.int64 or y.shape != images.shape[:1] or (len(y) and y.min() < 0):
            bad[f"images.npz {k}"] = f"{y.dtype} {tuple(y.shape)}, not int64 labels, one per image"
    classes, channels = meta.get("classes"), x.shape[1] if x.ndim == 4 else 0
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        bad["meta.json classes"] = "not a list of class names"
    elif any(len(y) and y.max() >= len(classes) for y in (arrays["train_y"], arrays["test_y"])):
        bad["meta.json classes"] = (
            f"{len(classes)} names for labels up to {max(arrays['train_y'].max(), arrays['test_y'].max())}"
        )
    if not _numbers(meta.get("mean"), channels):
        bad["meta.json mean"] = f"{meta.get('mean')!r:.60}, not {channels} finite numbers"
    if not _numbers(meta.get("std"), channels) or not all(v > 0 for v in meta["std"]):
        bad["meta.json std"] = f"{meta.get('std')!r:.60}, not {channels} finite numbers above 0"
    if not isinstance(meta.get("flip"), bool):
        bad["meta.json flip"] = f"{meta.get('flip')!r:.60}, not true or false"
    if type(meta.get("pad")) is not int or not 0 <= meta["pad"] <= min(x.shape[2:], default=0):
        bad["meta.json pad"] = f"{meta.get('pad')!r:.60}, not a count of pixels up to the image size"
    val = meta.get("val_indices")
    if not isinstance(val, list) or not all(type(i) is int and 0 <= i < n for i in val) or len(set(val)) != len(val):
        bad["meta.json val_indices"] = f"not distinct indices into the {n} training images"
    if bad:
        field, why = next(iter(bad.items()))
        file, name = field.split()
        raise ValueError(f"{path / file}: {name} is {why}; rerun `bench prepare` or `dvc repro prepare`")


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, per channel (x / 255 - mean) / std with the training split's statistics."""
    m = torch.as_tensor(mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with `pad` pixels of zero padding, and random horizontal flips, per sample: (B,C,H,W) -> same."""
    b, _, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
        dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device, generator=generator)
        rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        x = padded[torch.arange(b, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        x = torch.where(torch.rand(b, 1, 1, 1, device=x.device, generator=generator) < 0.5, x.flip(3), x)
    return x


class DeviceLoader:
    """An iterable of (images, labels) batches drawn by index from tensors on the device.

    Training: a fresh permutation each epoch from (seed, epoch), identical on every rank, each rank
    taking its own stride of it; drop_last keeps the global batch fixed. Evaluation: in order, each
    rank a disjoint stride, with no padding or duplication, so every image counts exactly once.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean,
        std,
        *,
        train: bool,
        pad=0,
        flip=False,
        seed=0,
        rank=0,
        world_size=1,
        epoch=lambda: 0,
        step=lambda: 0,
        memory_format=torch.contiguous_format,
    ):
        self.split, self.batch_size, self.train = split, batch_size, train
        self.memory_format = memory_format
        self.pad, self.flip, self.seed, self.rank, self.world_size = pad, flip, seed, rank, world_size
        dev = split.x.device
        self.mean = torch.tensor(mean, device=dev)  # on the device once, not per batch
        self.std = torch.tensor(std, device=dev)
        self.epoch = epoch  # () -> current epoch, so a resumed run continues the same permutations
        self.step = step  # () -> optimizer steps taken, so a run resumed mid-epoch skips the batches done

    def _indices(self) -> torch.Tensor:
        n = len(self.split.y)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
        perm = torch.randperm(n, generator=g)
        return perm[: n - n % (self.batch_size * self.world_size)][self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.split.y)
        if self.train:
            return n // (self.batch_size * self.world_size)
        return -(-len(range(self.rank, n, self.world_size)) // self.batch_size)

    def __iter__(self):
        device = self.split.x.device
        idx = self._indices().to(device)
        # augmentation drawn from (seed, epoch, rank): ranks differ, and a run resumed at an epoch
        # boundary replays exactly what the uninterrupted run would have drawn
        g = torch.Generator(device).manual_seed((self.seed * 100_003 + self.epoch()) * 1_009 + self.rank)
        # resumed mid-epoch (a SLURM requeue checkpoint): the batches this epoch already stepped on are drawn,
        # keeping the augmentation's generator in step, and not served again
        skip = max(0, self.step() - self.epoch() * len(self)) if self.train else 0
        for n, i in enumerate(range(0, len(idx), self.batch_size)):
            j = idx[i : i + self.batch_size]
            x = self.split.x[j]
            if self.train:
                x = augment(x, self.pad, self.flip, g)
            if n < skip:
                continue
            yield normalise(x, self.mean, self.std).contiguous(memory_format=self.memory_format), self.split.y[j]
