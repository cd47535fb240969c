"""Speed without changing the math: the optimised step against the eager one, `bench perf`, bad speed params."""
import json
import subprocess
import sys

import lightning as L
import pytest
import torch

from bench.data import load_prepared
from bench.perf import through_bench
from bench.train import build
from conftest import ROOT

QUICK = ["trainer.accelerator=cpu", "wandb.mode=disabled"]


def test_bench_perf_times_the_real_path_and_a_bare_loop_taking_the_same_steps(digits_dir):
    r = subprocess.run([sys.executable, "-m", "bench", "perf", "--variant", "residual_bn", "--depth", "8",
                        "--device", "cpu", "--batch", "32", "--steps", "6", "--warmup", "2", "--repeats", "1",
                        "--data", str(digits_dir), *QUICK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    for path in ("bench", "bare"):
        assert result[path]["images_per_s"] > 0 and len(result[path]["samples"]) == 1
    assert result["batch"] == 32 and result["data"] == "digits" and result["device"] == "cpu"
    # the same initial weights, batches, optimizer and schedule: the same losses, step by step
    assert result["max_loss_difference"] < 1e-5
    low, high = result["lightning_overhead_pct_range"]
    assert low <= result["lightning_overhead_pct"] <= high and isinstance(result["lightning_overhead_ms"], float)
    assert "bench perf: residual_bn-8 bare 1/1" in r.stderr  # progress


def test_optimised_step_follows_the_eager_loss_trajectory(params, digits_dir):
    """The correctness guard: torch.compile (inductor) + channels_last against eager, through Lightning."""
    data = load_prepared(digits_dir, params().data)
    quick = ("train.max_steps=6", "train.batch_size=32")
    eager = through_bench(params(*quick), "residual_bn", 8, data, warmup=1)
    fast = through_bench(params(*quick, "speed.compile=default", "speed.channels_last=true"), "residual_bn", 8, data,
                         warmup=1)
    assert len(eager["losses"]) == len(fast["losses"]) == 6
    assert eager["steps"] == fast["steps"] == 5  # Throughput leaves the warm-up step out
    assert fast["losses"] == pytest.approx(eager["losses"], rel=1e-3, abs=1e-4)
    assert eager["losses"][-1] < eager["losses"][0]  # it trains: the trajectory is not flat by accident


def test_compiled_and_eager_runs_share_one_checkpoint_layout(params, digits_dir):
    data = load_prepared(digits_dir, params().data)
    eager, _ = build(params(), "residual", 8, 0, data)
    compiled, _ = build(params("speed.compile=default", "speed.channels_last=true"), "residual", 8, 0, data)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    eager.load_state_dict(compiled.state_dict())  # a compiled run's checkpoint loads into an eager one
    conv = next(p for p in compiled.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] == 3)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_evaluation_does_not_depend_on_the_eval_batch_size(params, digits_dir):
    data = load_prepared(digits_dir, params().data)
    results = []
    for size in (1024, 7):  # one batch; 52 batches, the last one short
        module, dm = build(params(f"speed.eval_batch_size={size}"), "residual_bn", 8, 0, data)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        results.append(trainer.test(module, datamodule=dm, verbose=False)[0])
    assert results[0]["test/error"] == results[1]["test/error"]
    assert results[0]["test/loss"] == pytest.approx(results[1]["test/loss"], rel=1e-5)


@pytest.mark.parametrize("override, message", [
    ("speed.compile=fast", "speed.compile='fast' is not a torch.compile mode"),
    ("speed.eval_batch_size=0", "speed.eval_batch_size=0 must be at least 1"),
])
def test_bad_speed_params_fail_before_any_work(tmp_path, digits_dir, override, message):
    r = subprocess.run([sys.executable, "-m", "bench", "train", "--variant", "plain", "--depth", "8", "--out",
                        str(tmp_path / "cell"), "--data", str(digits_dir), *QUICK, override],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr
    assert not (tmp_path / "cell").exists()


def test_bench_perf_rejects_a_precision_its_bare_loop_cannot_match(digits_dir):
    r = subprocess.run([sys.executable, "-m", "bench", "perf", "--variant", "plain", "--depth", "8", "--device", "cpu",
                        "--precision", "bf16-true", "--data", str(digits_dir), *QUICK],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "bench perf supports precision" in r.stderr


@pytest.mark.gpu
def test_a_training_step_reads_nothing_back_from_the_gpu(params, digits_dir):
    """No host sync inside a step: torch raises on any synchronising call while the mode is "error"."""
    data = load_prepared(digits_dir, params().data)
    module, dm = build(params("trainer.accelerator=gpu", "train.max_steps=3", "trainer.log_every_n_steps=1000"),
                       "residual_bn", 8, 0, data)

    class Strict(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")

    trainer = L.Trainer(accelerator="gpu", devices=1, max_steps=3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[Strict()])
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3
