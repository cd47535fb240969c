"""`bench prepare` on small archives in the official CIFAR layout and on generated ImageFolder trees."""

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from archives import random_cifar, write_imagefolder
from helpers import PARAMS, snapshot

from bench import config
from bench.prepare import readers
from bench.prepare import stage as prepare
from bench.train.data import load_prepared


def data_cfg(*overrides):
    return config.load(PARAMS, list(overrides)).data


@pytest.fixture
def cifar(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, random_cifar(path, n_train=200, n_test=50)


def test_cifar10_archive_prepares_with_its_checksum(tmp_path, cifar):
    path, md5 = cifar
    cfg = data_cfg("data.name=cifar10", f"data.source={path}", f"data.md5={md5}", "data.val_size=20")
    meta = prepare.prepare(cfg, tmp_path / "prepared")
    assert meta["md5"] == md5
    assert meta["counts"] == {"train": 180, "val": 20, "test": 50}
    assert meta["shape"] == [3, 32, 32]
    assert meta["classes"] == [f"class{i}" for i in range(10)]
    assert meta["flip"]
    assert meta["pad"] == 4
    assert len(meta["val_indices"]) == 20
    d = load_prepared(tmp_path / "prepared", cfg)
    assert len(d.train.y) == 180
    assert len(d.val.y) == 20
    assert len(d.test.y) == 50
    # the images are the archive's own rows, in order
    with tarfile.open(path) as tar:
        import pickle

        test = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read(), encoding="bytes")
    assert torch.equal(d.test.x, torch.from_numpy(test[b"data"].reshape(-1, 3, 32, 32)))
    x = np.concatenate([d.train.x.numpy()]).astype(np.float64) / 255
    assert np.allclose(meta["mean"], x.mean(axis=(0, 2, 3)))
    assert np.allclose(meta["std"], x.std(axis=(0, 2, 3)))


def test_cifar100_archive(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    md5 = random_cifar(path, "cifar100", n_train=120, n_test=30)
    meta = prepare.prepare(
        data_cfg("data.name=cifar100", f"data.source={path}", f"data.md5={md5}", "data.val_size=10"), tmp_path / "p"
    )
    assert len(meta["classes"]) == 100
    assert meta["counts"]["test"] == 30


def test_official_checksum_is_the_default(tmp_path, cifar):
    path, md5 = cifar
    with pytest.raises(ValueError, match=f"expected md5 {readers.CIFAR['cifar10'].md5}, got {md5}"):
        prepare.prepare(data_cfg("data.name=cifar10", f"data.source={path}", "data.val_size=20"), tmp_path / "p")


@pytest.fixture
def previous(tmp_path, digits_dir):
    """A previously prepared folder, whose bytes must survive every refused prepare."""
    out = tmp_path / "prepared"
    shutil.copytree(digits_dir, out)
    return out, snapshot(out)


def assert_untouched(previous):
    out, before = previous
    assert snapshot(out) == before
    hidden = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert hidden in ([], [f".{out.name}.lock"])  # no temp folder left; the lock's folder may be


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return readers.file_md5(path)


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[100:400] = bytes(300)
    path.write_bytes(bytes(data))
    return readers.file_md5(path)


@pytest.mark.parametrize(
    "damage,message",
    [
        (truncate, "not a readable CIFAR archive"),
        (corrupt, "not a readable (CIFAR archive|tar)"),
        (lambda p: random_cifar(p, skip=("data_batch_3",)), "missing cifar-10-batches-py/data_batch_3"),
        (lambda p: random_cifar(p, skip=("batches.meta",)), "missing cifar-10-batches-py/batches.meta"),
    ],
)
def test_bad_cifar_archives_fail_cleanly_and_keep_previous_outputs(cifar, previous, damage, message):
    path, _ = cifar
    md5 = damage(path)
    cfg = data_cfg("data.name=cifar10", f"data.source={path}", f"data.md5={md5}", "data.val_size=20")
    with pytest.raises(ValueError, match=message):
        prepare.prepare(cfg, previous[0])
    assert_untouched(previous)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_imagefolder_prepares_from_a_folder_and_its_archive(tmp_path, fmt):
    root = write_imagefolder(tmp_path / "images", fmt=fmt)
    meta = prepare.prepare(data_cfg("data.name=imagefolder", f"data.source={root}", "data.val_size=3"), tmp_path / "p")
    assert meta["classes"] == ["cat", "dog", "frog"]
    assert meta["shape"] == [3, 12, 12]
    assert meta["counts"] == {"train": 15, "val": 3, "test": 9}
    d = load_prepared(tmp_path / "p", data_cfg("data.name=imagefolder", f"data.source={root}", "data.val_size=3"))
    assert sorted(d.test.y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    if fmt == "PNG":  # lossless: pixels of class c lie in [60c, 60c + 60)
        assert all(60 * y <= x.min() and x.max() < 60 * y + 60 for x, y in zip(d.test.x, d.test.y))
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    again = prepare.prepare(
        data_cfg("data.name=imagefolder", f"data.source={archive}", f"data.md5={meta['md5']}", "data.val_size=3"),
        tmp_path / "q",
    )
    assert again["md5"] == meta["md5"]  # the checksum is of the content, archived or not
    assert np.array_equal(np.load(tmp_path / "p/images.npz")["train_x"], np.load(tmp_path / "q/images.npz")["train_x"])


def mixed_sizes(root):
    from PIL import Image

    Image.new("RGB", (10, 12)).save(root / "train/dog/odd.png")


def unreadable(root):
    (root / "train/cat/broken.png").write_bytes(b"not a png")


def empty_class(root):
    (root / "train/zebra").mkdir()


def drop_test_class(root):
    shutil.rmtree(root / "test/frog")


@pytest.mark.parametrize(
    "damage,message",
    [
        (mixed_sizes, "images differ in size.*odd.png"),
        (unreadable, "unreadable image train/cat/broken.png"),
        (empty_class, "class folder .*train/zebra holds no images"),
        (drop_test_class, r"test classes \['cat', 'dog'\] differ from train classes"),
        (lambda root: None, "checksum mismatch.*expected content md5 f{32}"),
    ],
)
def test_bad_imagefolders_fail_cleanly_and_keep_previous_outputs(tmp_path, previous, damage, message):
    root = write_imagefolder(tmp_path / "images")
    damage(root)
    md5 = ["data.md5=" + "f" * 32] if "checksum" in message else []
    cfg = data_cfg("data.name=imagefolder", f"data.source={root}", "data.val_size=3", *md5)
    with pytest.raises(ValueError, match=message):
        prepare.prepare(cfg, previous[0])
    assert_untouched(previous)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.name=imagenet"], "unknown dataset 'imagenet'; valid datasets: digits, cifar10, cifar100, imagefolder"),
        (
            ["data.name=cifar10", "data.source=/no/such/cifar.tar.gz"],
            "data.source /no/such/cifar.tar.gz does not exist",
        ),
        (["data.name=imagefolder"], "data.source is required"),
        (
            ["data.name=digits", "data.source=null", "data.val_size=5000"],
            f"data.val_size=5000 must be between 0 and the {1797 - readers.DIGITS_TEST}",
        ),  # 1,797 digits in all
    ],
)
def test_bad_names_and_sources(tmp_path, previous, overrides, message):
    with pytest.raises(ValueError, match=message):
        prepare.prepare(data_cfg(*overrides), previous[0])
    assert_untouched(previous)


def test_interrupted_prepare_keeps_previous_outputs(previous, monkeypatch):
    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(data_cfg(), previous[0])
    assert_untouched(previous)


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(prepare.time, "sleep", waits.append)
    with pytest.raises(ValueError, match="could not download http://127.0.0.1:9/cifar.tar.gz after 3 tries.*Offline"):
        prepare.download("http://127.0.0.1:9/cifar.tar.gz", tmp_path / "cifar.tar.gz", md5=None, retries=3)
    assert waits == [1, 2]  # backs off between tries, not after the last
    assert list(tmp_path.iterdir()) == []


def test_meta_json_is_small_and_readable(digits_dir):
    meta = json.loads((digits_dir / "meta.json").read_text())
    assert set(meta) >= {"name", "md5", "classes", "counts", "val_indices", "mean", "std"}
    assert len((digits_dir / "meta.json").read_text().splitlines()) < 40
