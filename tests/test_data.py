"""A cell's data: augmentation, the loaders (each image once per evaluation, ranks disjoint), the digits dataset."""

import numpy as np
import pytest
import torch
from helpers import DIGITS, PARAMS

from bench import config
from bench.prepare import readers
from bench.prepare import stage as prepare
from bench.train.data import DeviceLoader, Split, augment, load_prepared
from bench.validate import local_batch_size


def test_random_crop_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment(x, pad=2, flip=False)
    assert out.shape == x.shape
    assert out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert hits, f"sample {i} is not a crop of its own padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5  # the offset is drawn per sample


def test_flip_is_per_sample_and_horizontal():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment(x, pad=0, flip=True)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_no_augmentation_is_identity():
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment(x, 0, False), x)


def test_the_global_batch_is_split_across_the_processes():
    assert local_batch_size(128, 4) == 32  # one that does not divide: test_faults.py's bad inputs


def split(n):
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), torch.arange(n))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_counts_every_image_exactly_once(world):
    s = split(101)
    seen = []
    for rank in range(world):
        loader = DeviceLoader(s, 8, [0.0], [1 / 255], train=False, rank=rank, world_size=world)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen += [int(v) for _, y in batches for v in y]
    assert sorted(seen) == list(range(101))


def test_training_epochs_are_full_batches_reshuffled_and_rank_disjoint():
    s = split(100)
    epoch = [0]
    loaders = [
        DeviceLoader(s, 16, [0.0], [1 / 255], train=True, seed=1, rank=r, world_size=2, epoch=lambda: epoch[0])
        for r in range(2)
    ]
    first = [torch.cat([y for _, y in ld]) for ld in loaders]
    assert all(len(f) == 96 // 2 for f in first)
    assert len(loaders[0]) == 3
    assert not set(first[0].tolist()) & set(first[1].tolist())
    epoch[0] = 1
    assert not torch.equal(torch.cat([y for _, y in loaders[0]]), first[0])
    epoch[0] = 0
    assert torch.equal(torch.cat([y for _, y in loaders[0]]), first[0])  # epoch-seeded: reproducible


def test_loader_normalises_with_train_statistics():
    s = split(10)
    x, _ = next(iter(DeviceLoader(s, 10, [0.5], [0.25], train=False)))
    assert x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0, 0], (torch.arange(10) / 255 - 0.5) / 0.25)


def test_digits_dataset_is_real_and_pinned(digits_dir, tmp_path):
    cfg = config.load(PARAMS, DIGITS).data
    d = load_prepared(digits_dir, cfg)
    assert d.train.x.dtype == torch.uint8
    assert d.shape == (1, 8, 8)
    assert len(d.classes) == 10
    assert len(d.train.y) + len(d.val.y) == 1797 - readers.DIGITS_TEST
    assert len(d.test.y) == readers.DIGITS_TEST
    assert len(d.val.y) == cfg.val_size
    again = load_prepared(prepare.prepare(cfg, tmp_path / "again") and tmp_path / "again", cfg)
    assert torch.equal(again.val.y, d.val.y)  # pinned split
    assert torch.equal(again.train.x, d.train.x)
    x = d.train.x.double() / 255
    assert np.allclose(d.mean, [x.mean().item()])
    assert np.allclose(d.std, [x.std(unbiased=False).item()])
    assert set(d.train.y.tolist()) == set(range(10))
