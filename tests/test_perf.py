"""Speed without changing the math: the optimised step against the eager one, `bench perf`, bad speed params."""

import json

import lightning as L
import pytest
import torch

from bench.perf import through_bench
from bench.record import Cell
from bench.train.data import load_prepared
from bench.train.stage import build

QUICK = ["trainer.accelerator=cpu", "wandb.mode=disabled"]


@pytest.mark.integration
def test_bench_perf_times_the_real_path_and_a_bare_loop_taking_the_same_steps(cli, digits_dir):
    code, out, err = cli(
        "perf",
        "--variant",
        "residual_bn",
        "--depth",
        "8",
        "--device",
        "cpu",
        "--batch",
        "32",
        "--steps",
        "6",
        "--warmup",
        "2",
        "--repeats",
        "2",
        "--data",
        digits_dir,
        *QUICK,
    )
    assert code == 0, err[-3000:]
    result = json.loads(out)
    for path in ("bench", "bare"):
        samples = result[path]["samples"]
        assert len(samples) == 2
        assert all(s > 0 for s in samples)
        assert result[path]["images_per_s"] == pytest.approx(sum(samples) / 2, abs=0.1)  # the median of two
        assert result[path]["step_ms"] == pytest.approx(1000 * 32 / result[path]["images_per_s"], rel=0.25)
    assert result["batch"] == 32
    assert result["data"] == "digits"
    assert result["device"] == "cpu"
    assert result["trainer.deterministic"] is True  # what was timed
    assert result["trainer.benchmark"] is None
    # the same initial weights, batches, optimizer and schedule: the same losses, step by step
    assert result["max_loss_difference"] < 1e-5
    # the overhead is the median of the paired runs, each pair's (bare / bench - 1) from its own images/s
    pairs = [100 * (bare / real - 1) for real, bare in zip(result["bench"]["samples"], result["bare"]["samples"])]
    assert result["lightning_overhead_pct_range"] == pytest.approx([min(pairs), max(pairs)], abs=0.05)
    assert result["lightning_overhead_pct"] == pytest.approx(sum(pairs) / 2, abs=0.05)
    assert isinstance(result["lightning_overhead_ms"], float)
    assert "bench perf: residual_bn-8 bare 2/2" in err  # progress


@pytest.mark.integration
def test_bench_perf_profile_says_where_a_steps_time_goes(cli, digits_dir, tmp_path):
    code, _, err = cli(
        "perf",
        "--variant",
        "residual_bn",
        "--depth",
        "8",
        "--device",
        "cpu",
        "--batch",
        "32",
        "--steps",
        "2",
        "--warmup",
        "2",
        "--repeats",
        "1",
        "--data",
        digits_dir,
        "--profile",
        tmp_path / "profile",
        *QUICK,
    )
    assert code == 0, err[-3000:]
    table = (tmp_path / "profile" / "fit-profile.txt").read_text()
    # Lightning's own hooks beside the operators, over the 10 profiled steps
    assert "[pl][profile]run_training_batch" in table
    assert "aten::convolution" in table
    assert "ProfilerStep*" in table
    assert " 10  " in table.split("ProfilerStep*")[1].splitlines()[0]
    assert list((tmp_path / "profile").glob("*.pt.trace.json"))  # the Chrome trace


@pytest.mark.integration  # torch.compile: about 25 s on 2 cores
def test_optimised_step_follows_the_eager_loss_trajectory(params, digits_dir):
    """The correctness guard: torch.compile (inductor) + channels_last against eager, through Lightning."""
    data = load_prepared(digits_dir, params().data)
    quick = ("train.max_steps=6", "train.batch_size=32")
    eager = through_bench(params(*quick), "residual_bn", 8, data, warmup=1)
    fast = through_bench(
        params(*quick, "speed.compile=default", "speed.channels_last=true"), "residual_bn", 8, data, warmup=1
    )
    assert len(eager["losses"]) == len(fast["losses"]) == 6
    assert eager["steps"] == fast["steps"] == 5  # Throughput leaves the warm-up step out
    assert fast["losses"] == pytest.approx(eager["losses"], rel=1e-3, abs=1e-4)
    assert eager["losses"][-1] < eager["losses"][0]  # it trains: the trajectory is not flat by accident


@pytest.mark.integration  # torch.compile
def test_compiled_and_eager_runs_share_one_checkpoint_layout(params, digits_dir):
    data = load_prepared(digits_dir, params().data)
    eager, _ = build(params(), Cell("residual", 8, 0), data)
    compiled, _ = build(params("speed.compile=default", "speed.channels_last=true"), Cell("residual", 8, 0), data)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    eager.load_state_dict(compiled.state_dict())  # a compiled run's checkpoint loads into an eager one
    conv = next(p for p in compiled.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] == 3)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()


def test_evaluation_does_not_depend_on_the_eval_batch_size(params, digits_dir):
    data = load_prepared(digits_dir, params().data)
    results = []
    for size in (1024, 7):  # one batch; 52 batches, the last one short
        module, dm = build(params(f"speed.eval_batch_size={size}"), Cell("residual_bn", 8, 0), data)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        results.append(trainer.test(module, datamodule=dm, verbose=False)[0])
    assert results[0]["test/error"] == results[1]["test/error"]
    assert results[0]["test/loss"] == pytest.approx(results[1]["test/loss"], rel=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("speed.compile=fast", "speed.compile='fast' is not a torch.compile mode"),
        ("speed.eval_batch_size=0", "speed.eval_batch_size=0 must be at least 1"),
    ],
)
def test_bad_speed_params_fail_before_any_work(cli, tmp_path, digits_dir, override, message):
    code, _, err = cli(
        "train",
        "--variant",
        "plain",
        "--depth",
        "8",
        "--out",
        tmp_path / "cell",
        "--data",
        digits_dir,
        *QUICK,
        override,
    )
    assert code == 2
    assert message in err
    assert not (tmp_path / "cell").exists()


def test_bench_perf_rejects_a_precision_its_bare_loop_cannot_match(cli, digits_dir):
    code, _, err = cli(
        "perf",
        "--variant",
        "plain",
        "--depth",
        "8",
        "--device",
        "cpu",
        "--precision",
        "16",  # Lightning's alias of 16-mixed: valid, but not one of the bare loop's
        "--data",
        digits_dir,
        *QUICK,
    )
    assert code == 2
    assert "bench perf supports precision" in err


@pytest.mark.gpu
def test_a_training_step_reads_nothing_back_from_the_gpu(params, digits_dir):
    """No host sync inside a step: torch raises on any synchronising call while the mode is "error"."""
    data = load_prepared(digits_dir, params().data)
    module, dm = build(
        params("trainer.accelerator=gpu", "train.max_steps=3", "trainer.log_every_n_steps=1000"),
        Cell("residual_bn", 8, 0),
        data,
    )

    class Strict(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")

    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Strict()],
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3
