"""Scale-out on CPU: resume after kill -9, DDP (gloo) against one process, the test set counted once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bench import config
from bench.resume import checkpoint_to_resume, run_key
from conftest import PARAMS, ROOT

QUICK = ["--no-progress", "wandb.mode=disabled", "trainer.accelerator=cpu"]


def bench_train(out, data, *overrides, variant="residual_bn", depth=20, **kw):
    cmd = [sys.executable, "-m", "bench", "train", "--variant", variant, "--depth", str(depth), "--out", str(out),
           "--data", str(data), *QUICK, *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_kill_9_then_rerun_resumes_and_ends_like_an_uninterrupted_run(tmp_path, digits_dir):
    args = ["trainer.deterministic=true", "train.max_steps=200"]
    killed = bench_train(tmp_path / "killed", digits_dir, *args)
    ckpt = tmp_path / "killed/last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if ckpt.exists():
            try:
                if torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] >= 30:
                    break
            except Exception:  # being replaced right now
                pass
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed: make it longer"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed/metrics.json").exists()

    resumed = finish(bench_train(tmp_path / "killed", digits_dir, *args))
    assert "resuming from" in resumed
    uninterrupted = finish(bench_train(tmp_path / "whole", digits_dir, *args))
    assert "resuming" not in uninterrupted
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("killed", "whole"))
    for k in ("train/loss", "train/error", "val/loss", "test/loss", "test/error", "steps", "end/shattering"):
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k
    rows = (tmp_path / "killed/history.csv").read_text().splitlines()
    assert len(rows) == 1 + b["epochs"]  # no epoch lost or repeated


def test_a_checkpoint_of_other_params_is_not_resumed(tmp_path):
    p = config.load(PARAMS)
    key = run_key(p, "plain", 8, 0, "md5")
    assert key != run_key(config.load(PARAMS, ["train.lr=0.2"]), "plain", 8, 0, "md5")
    assert key == run_key(config.load(PARAMS, ["wandb.project=x", "grid.seeds=[0, 1]"]), "plain", 8, 0, "md5")
    torch.save({"hyper_parameters": {"run_key": "other"}, "global_step": 5}, tmp_path / "last.ckpt")
    path, message = checkpoint_to_resume(tmp_path, key)
    assert path is None and "other params" in message and not (tmp_path / "last.ckpt").exists()
    torch.save({"hyper_parameters": {"run_key": key}, "global_step": 5}, tmp_path / "last.ckpt")
    path, message = checkpoint_to_resume(tmp_path, key)
    assert path == str(tmp_path / "last.ckpt") and "step 5" in message


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, digits_dir):
    # no BN (or SyncBN) and no augmentation: both see the same 128 images per step, so the averaged
    # gradients and the whole run agree up to float reduction order
    args = ["train.max_steps=20", "train.augment=false", "trainer.deterministic=true"]
    one = bench_train(tmp_path / "one", digits_dir, *args, variant="residual", depth=8)
    finish(one)
    two = bench_train(tmp_path / "two", digits_dir, *args, "trainer.devices=2", "trainer.strategy=ddp",
                      variant="residual", depth=8)
    finish(two)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-3)
    assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-3)
    assert json.loads((tmp_path / "two/env.json").read_text())["world_size"] == 2


def test_a_global_batch_that_does_not_divide_fails_before_training(tmp_path, digits_dir):
    r = subprocess.run([sys.executable, "-m", "bench", "train", "--variant", "plain", "--depth", "8", "--out",
                        str(tmp_path / "out"), "--data", str(digits_dir), *QUICK, "train.batch_size=127",
                        "trainer.devices=2", "trainer.strategy=ddp"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 2 and "train.batch_size=127 does not divide across 2 processes" in r.stderr
    assert not (tmp_path / "out/metrics.json").exists()
