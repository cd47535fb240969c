"""The real DVC: the prepare stage through `dvc repro`, raw data pinned by .dvc files, a local remote."""

import shutil

import pytest
import yaml
from archives import random_cifar
from helpers import ROOT, run, set_params

pytestmark = pytest.mark.integration


def test_prepare_stage_pins_raw_and_prepared_data(repo):
    archive = repo / "data/raw/cifar-10-python.tar.gz"
    md5 = random_cifar(archive, n_train=100, n_test=20)
    run("dvc add -q data/raw/cifar-10-python.tar.gz", repo)
    set_params(repo, data={"name": "cifar10", "source": "data/raw/cifar-10-python.tar.gz", "md5": md5, "val_size": 10})
    run("dvc repro prepare", repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]["deps"]
    assert {d["path"] for d in lock["deps"]} == set(declared)  # the code by folder and file, and data/raw
    assert "data/raw" in declared
    assert lock["outs"][0]["path"] == "data/prepared"
    assert lock["outs"][0]["md5"].endswith(".dir")
    assert lock["params"]["params.yaml"]["data"]["md5"] == md5
    assert (repo / "data/prepared/meta.json").exists()
    assert yaml.safe_load((repo / "data/raw/cifar-10-python.tar.gz.dvc").read_text())["outs"][0]["md5"] == md5
    again = run("dvc repro prepare", repo)
    assert "didn't change" in again.stdout or "up to date" in again.stdout

    set_params(repo, data={"md5": "0" * 32})  # a wrong checksum: the stage fails, the old outputs stay
    bad = run("dvc repro prepare", repo, check=False)
    assert bad.returncode != 0
    assert "checksum mismatch" in bad.stderr + bad.stdout
    assert (repo / "data/prepared/meta.json").exists()


def test_local_remote_push_then_pull(repo, tmp_path):
    archive = repo / "data/raw/cifar-10-python.tar.gz"
    md5 = random_cifar(archive, n_train=50, n_test=10)
    remote = tmp_path / "remote"
    run(f"dvc remote add -d local {remote} && dvc add -q data/raw/cifar-10-python.tar.gz && dvc push -q", repo)
    archive.unlink()
    shutil.rmtree(repo / ".dvc/cache")
    run("dvc pull -q data/raw/cifar-10-python.tar.gz.dvc", repo)
    from bench.prepare.readers import file_md5

    assert file_md5(archive) == md5
