"""Checks on a real CIFAR-10 copy (an ImageFolder tar.gz of the 60,000 JPEGs) named by $BENCH_CIFAR10_JPEG;
skipped where there is none."""

import os
import sys
from pathlib import Path

import pytest
from helpers import PARAMS, ROOT, run

from bench import config
from bench.prepare import stage as prepare

JPEG = Path(os.environ.get("BENCH_CIFAR10_JPEG", "/nonexistent"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not JPEG.is_file(), reason="$BENCH_CIFAR10_JPEG names no file")]


def test_cifar10_jpeg_imagefolder_and_its_official_layout_archive(tmp_path):
    cfg = config.load(PARAMS, ["data.name=imagefolder", f"data.source={JPEG}", "data.val_size=5000"]).data
    meta = prepare.prepare(cfg, tmp_path / "jpeg")
    assert meta["counts"] == {"train": 45000, "val": 5000, "test": 10000}
    assert len(meta["classes"]) == 10
    assert meta["shape"] == [3, 32, 32]
    assert meta["classes"][0] == "airplane"

    archive = tmp_path / "cifar-10-python.tar.gz"  # the official layout, by the tool that builds it
    md5 = run([sys.executable, str(ROOT / "benchmarks/cifar10_official.py"), str(JPEG), str(archive)]).stdout.strip()
    cifar = config.load(
        PARAMS, ["data.name=cifar10", f"data.source={archive}", f"data.md5={md5}", "data.val_size=5000"]
    ).data
    official = prepare.prepare(cifar, tmp_path / "cifar")
    assert official["counts"] == meta["counts"]
    assert official["md5"] == md5
    assert official["mean"] == pytest.approx(meta["mean"])
    assert official["val_indices"] == meta["val_indices"]
