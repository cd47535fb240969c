"""Scale-out on CPU: two DDP processes (gloo) end like one process with the same global batch."""

import json

import pytest
from helpers import QUICK, bench


@pytest.mark.integration
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, digits_dir):
    # no BN (or SyncBN) and no augmentation: both see the same 128 images per step, so the averaged
    # gradients and the whole run agree up to float reduction order
    args = ["train.max_steps=20", "train.augment=false", "trainer.deterministic=true"]
    cell = ["--variant", "residual", "--depth", "8", "--data", digits_dir, *QUICK, *args]
    bench("train", *cell, "--out", tmp_path / "one", check=True)
    bench("train", *cell, "--out", tmp_path / "two", "trainer.devices=2", "trainer.strategy=ddp", check=True)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-3)
    assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-3)
    assert json.loads((tmp_path / "two/env.json").read_text())["world_size"] == 2
