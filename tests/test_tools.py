"""The tools in benchmarks/: the offline wheelhouse (wheels.py), CIFAR-10 in the official layout (cifar10_official.py)."""

import os
from importlib import metadata

import pytest
from helpers import ROOT, benchmark_tool


def test_the_closure_of_a_package_is_it_and_its_installed_requirements_at_their_versions():
    wheels = benchmark_tool("wheels")
    pins = wheels.closure("dvc")
    assert pins["dvc"] == metadata.version("dvc")
    assert {"pyyaml", "networkx"} <= set(pins)  # dvc's requirements, and theirs
    assert "torch" not in pins and "lightning" not in pins  # nothing dvc does not need
    assert set(wheels.closure("pyyaml")) == {"pyyaml"}


def test_an_imagefolder_becomes_an_official_cifar10_archive_that_bench_prepare_reads_with_its_md5(tmp_path):
    import numpy as np
    import pytest
    from archives import write_imagefolder
    from helpers import PARAMS

    from bench import config
    from bench.prepare.readers import file_md5, read_imagefolder
    from bench.prepare.stage import prepare
    from bench.train.data import load_prepared

    official = benchmark_tool("cifar10_official")
    folder = write_imagefolder(tmp_path / "jpeg", classes=official.LABELS, per_class=(3, 2), size=(32, 32))
    md5 = official.convert(folder, tmp_path / "cifar-10-python.tar.gz")
    assert md5 == file_md5(tmp_path / "cifar-10-python.tar.gz")
    cfg = config.load(
        PARAMS,
        [
            "data.name=cifar10",
            f"data.source={tmp_path / 'cifar-10-python.tar.gz'}",
            f"data.md5={md5}",
            "data.val_size=0",
        ],
    ).data
    prepare(cfg, tmp_path / "prepared")
    data, raw = load_prepared(tmp_path / "prepared", cfg), read_imagefolder(folder, None, 1024, 10**6)
    assert data.classes == official.LABELS and data.md5 == md5
    # the same pixels and labels, read back through the official reader (PNG: lossless)
    assert np.array_equal(data.test.x.numpy(), raw.test_x) and np.array_equal(data.test.y.numpy(), raw.test_y)
    assert sorted(map(bytes, data.train.x.numpy())) == sorted(map(bytes, raw.train_x))
    with pytest.raises(ValueError, match="not CIFAR-10's"):
        official.convert(write_imagefolder(tmp_path / "three"), tmp_path / "three.tar.gz")
    assert not (tmp_path / "three.tar.gz").exists()


@pytest.mark.integration  # about 2 minutes on 2 cores
def test_the_gpu_check_runs_its_cifar10_steps_on_the_cpu(tmp_path):
    """benchmarks/gpu.sh, DRY=1: ResNet-20 through He et al.'s protocol by `bench train`, and 1, 2 and 4 cells
    through `bench grid`, eager and a few iterations each, on a small CIFAR-10 ImageFolder of JPEGs."""
    import json
    import subprocess
    import sys
    import tarfile

    from archives import write_imagefolder

    jpeg = write_imagefolder(
        tmp_path / "jpeg",
        classes=benchmark_tool("cifar10_official").LABELS,
        per_class=(130, 30),
        size=(32, 32),
        fmt="JPEG",
    )
    env = {
        **os.environ,
        "DRY": "1",
        "STEPS": "he20 grid",
        "MODE": "null",
        "HE_ITERS": "4",
        "GRID_ITERS": "2",
        "JPEG": str(jpeg),
        "RESULTS": str(tmp_path / "gpu"),
        "OUT": str(tmp_path),
        "PY": sys.executable,
    }
    r = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = (tmp_path / "gpu" / "summary.txt").read_text()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "cut to 4 of 64,000 iterations" in summary and "exit 0" in summary.split("he20")[1].splitlines()[0]
    metrics = json.loads((tmp_path / "gpu" / "he2016-resnet20" / "metrics.json").read_text())
    assert metrics["dataset"] == "cifar10" and metrics["steps"] == 4 and metrics["train_images"] == 1300
    for k in (1, 2, 4):
        assert f"grid x{k}: exit 0, {k} of {k} cells" in summary
        assert len(list((tmp_path / "gpu" / f"grid-x{k}").glob("residual_bn-20-*.json"))) == k
    with tarfile.open(tmp_path / "gpu.tar.gz") as tar:  # what a device machine sends back
        assert {"gpu/summary.txt", "gpu/he2016-resnet20/metrics.json"} <= set(tar.getnames())
