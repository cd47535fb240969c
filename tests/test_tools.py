"""The tools in benchmarks/: the offline wheelhouse (wheels.py), CIFAR-10 in the official layout (cifar10_official.py)."""
import importlib.util
from importlib import metadata

from helpers import ROOT


def load_wheels():
    spec = importlib.util.spec_from_file_location("wheels", ROOT / "benchmarks" / "wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_closure_of_a_package_is_it_and_its_installed_requirements_at_their_versions():
    wheels = load_wheels()
    pins = wheels.closure("dvc")
    assert pins["dvc"] == metadata.version("dvc")
    assert {"pyyaml", "networkx"} <= set(pins)  # dvc's requirements, and theirs
    assert "torch" not in pins and "lightning" not in pins  # nothing dvc does not need
    assert set(wheels.closure("pyyaml")) == {"pyyaml"}


def load_official():
    spec = importlib.util.spec_from_file_location("cifar10_official", ROOT / "benchmarks" / "cifar10_official.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_imagefolder_becomes_an_official_cifar10_archive_that_bench_prepare_reads_with_its_md5(tmp_path):
    import numpy as np
    import pytest

    from archives import write_imagefolder
    from bench import config
    from bench.data import load_prepared
    from bench.prepare import prepare
    from bench.readers import file_md5, read_imagefolder
    from helpers import PARAMS

    official = load_official()
    folder = write_imagefolder(tmp_path / "jpeg", classes=official.LABELS, per_class=(3, 2), size=(32, 32))
    md5 = official.convert(folder, tmp_path / "cifar-10-python.tar.gz")
    assert md5 == file_md5(tmp_path / "cifar-10-python.tar.gz")
    cfg = config.load(PARAMS, ["data.name=cifar10", f"data.source={tmp_path / 'cifar-10-python.tar.gz'}",
                               f"data.md5={md5}", "data.val_size=0"]).data
    prepare(cfg, tmp_path / "prepared")
    data, raw = load_prepared(tmp_path / "prepared", cfg), read_imagefolder(folder, None, 1024, 10**6)
    assert data.classes == official.LABELS and data.md5 == md5
    # the same pixels and labels, read back through the official reader (PNG: lossless)
    assert np.array_equal(data.test.x.numpy(), raw.test_x) and np.array_equal(data.test.y.numpy(), raw.test_y)
    assert sorted(map(bytes, data.train.x.numpy())) == sorted(map(bytes, raw.train_x))
    with pytest.raises(ValueError, match="not CIFAR-10's"):
        official.convert(write_imagefolder(tmp_path / "three"), tmp_path / "three.tar.gz")
    assert not (tmp_path / "three.tar.gz").exists()
