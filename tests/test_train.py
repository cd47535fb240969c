"""`bench train` of one cell: it learns and writes its results, repeatably; divergence; the lr sweep; the history."""

import csv
import json
import shutil

import pytest
import torch
import torch.utils._python_dispatch
import yaml
from helpers import DIGITS, PROBE, QUICK, bench
from safetensors.numpy import load_file

from bench.record import SHORTCUTS, Cell
from bench.train.stage import train


def read_history(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def test_short_run_learns_and_writes_its_results(params, tmp_path, digits_dir):
    p = params("train.max_steps=60", "train.milestones=[40]", "train.batch_size=128", "train.lr=0.05")  # learns in 60
    m = train(p, Cell("residual_bn", 8, 0), tmp_path, digits_dir, progress=False)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == m
    assert m["steps"] == 60
    assert not m["diverged"]
    assert m["diverged_step"] is None
    assert m["test/error"] < 0.3  # chance is 0.9 on 10 digit classes
    assert m["images_per_s"] > 0
    assert m["wall_time_s"] > 0
    rows = read_history(tmp_path)
    assert len(rows) == m["epochs"]
    assert int(rows[-1]["step"]) == 60
    assert float(rows[-1]["train/loss"]) < 0.5 * float(rows[0]["train/loss"])  # training lowers the loss
    assert float(rows[-1]["lr"]) == pytest.approx(p.train.lr * 0.1, rel=1e-6)  # after the milestone at 40
    assert all(r["test/error"] for r in rows)  # test error tracked per epoch
    assert (tmp_path / "last.ckpt").exists()
    ran_with = yaml.safe_load((tmp_path / "config.yaml").read_text())  # the resolved params, overrides included
    assert ran_with["cell"] == {"variant": "residual_bn", "depth": 8, "seed": 0}
    assert ran_with["train"]["max_steps"] == 60
    assert ran_with["train"]["milestones"] == [40]
    for when in ("init", "end"):  # the pathology diagnostics, at initialisation and after training
        assert -1 <= m[f"{when}/shattering"] <= 1
        assert m[f"{when}/grad_ratio"] > 0
    assert m["end/intact_error"] < 0.5
    assert m["end/lesion_max_increase"] >= 0
    assert m["init/intact_error"] is None  # no lesions of an untrained net: it is at chance
    blocks = json.loads((tmp_path / "diagnostics.json").read_text())
    assert set(blocks) == {"probe", "init", "end"}
    assert len(blocks["end"]["response_std"]) == 7  # stem + 2 x 3 blocks
    for key in ("spp_squared_mean", "spp_variance", "spp_branch_variance", "branch_ratio_per_block"):
        assert len(blocks["end"][key]) == 3, key  # one per block: the signal propagation plot
    assert 0 < m["end/branch_ratio"] < 10
    assert m["init/spp_growth"] > 0
    assert blocks["probe"]["size"] == p.diagnostics.probe_size
    assert len(blocks["probe"]["indices"]) == p.diagnostics.probe_size
    assert max(blocks["probe"]["class_counts"]) - min(blocks["probe"]["class_counts"]) <= 1  # stratified
    check_checkpoint_loads_alone(tmp_path / "last.ckpt", digits_dir, p, m)
    # every image's prediction by the final weights: the test error again, and the clean training error
    scored = load_file(str(tmp_path / "predictions.safetensors"))
    assert len(scored["test/label"]) == m["test_images"]
    assert len(scored["train/label"]) == m["train_images"]
    assert (scored["test/predicted"] != scored["test/label"]).mean() == pytest.approx(m["test/error"], abs=1e-6)
    assert (scored["train/predicted"] != scored["train/label"]).mean() == pytest.approx(m["train/clean_error"])


def check_checkpoint_loads_alone(ckpt, data_dir, p, m):
    """One line loads a trained cell for inference, from its weights (bench.weights, checked against its
    metrics.json) or its checkpoint: each names its architecture and normalisation; the test error is the
    recorded one."""
    import torch

    from bench import weights
    from bench.train.data import load_prepared, normalise
    from bench.train.module import Classifier

    test = load_prepared(data_dir, p.data).test
    cell = weights.load(ckpt.parent)
    assert cell.model.training is False
    assert cell.run_key == m["run_key"]
    assert len(cell.classes) == 10
    assert (cell.predict(test.x) != test.y).float().mean().item() == pytest.approx(m["test/error"], abs=1e-6)
    net = Classifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert net.hparams.architecture["variant"] == "residual_bn"
    assert len(net.hparams.data["classes"]) == 10
    with torch.no_grad():
        logits = net(normalise(test.x, net.hparams.data["mean"], net.hparams.data["std"]))
    assert (logits.argmax(1) != test.y).float().mean().item() == pytest.approx(m["test/error"], abs=1e-6)


@pytest.mark.integration  # three trainings; bench.weights itself: tests/test_weights.py
def test_weights_that_are_not_the_cell_s_are_refused(params, tmp_path, digits_dir):
    """Stale weights (another run's file in the folder, as after `git checkout` without `dvc checkout`) never load
    as the cell's; the same training gives the same bytes, and so the same recorded hash."""
    from bench import weights

    a, b, again = tmp_path / "a", tmp_path / "b", tmp_path / "again"
    ma = train(params("train.max_steps=10"), Cell("plain", 8, 0), a, digits_dir, progress=False)
    train(params("train.max_steps=10", "train.lr=0.2"), Cell("plain", 8, 0), b, digits_dir, progress=False)
    assert ma["weights_sha256"] == weights.sha256(a / "weights.safetensors")
    shutil.copy(b / "weights.safetensors", a / "weights.safetensors")  # the other experiment's weights
    with pytest.raises(ValueError, match="stale weights"):
        weights.load(a)
    (a / "weights.safetensors").unlink()
    with pytest.raises(ValueError, match="dvc pull"):
        weights.load(a)
    m_again = train(params("train.max_steps=10"), Cell("plain", 8, 0), again, digits_dir, progress=False)
    assert m_again["weights_sha256"] == ma["weights_sha256"]  # deterministic training, deterministic bytes


def test_a_run_without_diagnostics_trains_the_same_bits_and_keeps_no_diagnostics_file(params, tmp_path, digits_dir):
    """The lr sweep's runs skip the probe diagnostics: the same weights and errors as a cell's run, and no
    diagnostics.json, not even one an earlier run left in the folder."""
    p, cell = params("train.max_steps=10", *PROBE), Cell("residual_bn", 8, 0)
    with_them = train(p, cell, tmp_path / "with", digits_dir, progress=False)
    (tmp_path / "without").mkdir()
    (tmp_path / "without/diagnostics.json").write_text("{}")  # an earlier run's
    without = train(p, cell, tmp_path / "without", digits_dir, progress=False, diagnose=False)
    assert (tmp_path / "with/diagnostics.json").exists() and not (tmp_path / "without/diagnostics.json").exists()
    assert without["weights_sha256"] == with_them["weights_sha256"]
    assert without["test/error"] == with_them["test/error"]
    assert "init/shattering" in with_them and "init/shattering" not in without


def test_the_default_run_is_bitwise_repeatable_on_the_cpu(params, tmp_path, digits_dir):
    """trainer.deterministic and speed.threads in params.yaml: the same cell twice gives the same bits,
    timings aside, so that a fresh clone reproduces the committed results exactly."""
    p = params("train.max_steps=20", "train.milestones=[10]")
    assert p.trainer.deterministic
    assert p.speed.threads == 1
    a, b = tmp_path / "a", tmp_path / "b"
    ma, mb = (train(p, Cell("plain_bn", 8, 1), out, digits_dir, progress=False) for out in (a, b))
    timing = {"wall_time_s", "images_per_s"}
    assert {k: v for k, v in ma.items() if k not in timing} == {k: v for k, v in mb.items() if k not in timing}
    for name in ("history.csv", "diagnostics.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


# aten operators whose CUDA kernels raise under torch.use_deterministic_algorithms(True), which Lightning's
# trainer.deterministic=true sets (torch's own list, in that function's documentation)
CUDA_RAISES_WHEN_DETERMINISTIC = {
    "avg_pool3d_backward",
    "_adaptive_avg_pool2d_backward",
    "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward",
    "fractional_max_pool2d_backward",
    "fractional_max_pool3d_backward",
    "max_unpool2d",
    "max_unpool3d",
    "upsample_linear1d_backward",
    "upsample_bilinear2d_backward",
    "upsample_bicubic2d_backward",
    "upsample_trilinear3d_backward",
    "reflection_pad1d_backward",
    "reflection_pad2d_backward",
    "reflection_pad3d_backward",
    "nll_loss2d_forward",
    "_ctc_loss_backward",
    "_embedding_bag_backward",
    "put_",
    "histc",
    "median",
    "grid_sampler_2d_backward",
    "cumsum",
    "scatter_reduce",
}


class Operators(torch.utils._python_dispatch.TorchDispatchMode):
    """The names of the aten operators that run while it is active, backward passes included."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_a_cell_uses_no_operator_that_cuda_refuses_when_deterministic(params, tmp_path, digits_dir):
    """params.yaml's trainer.deterministic=true holds on a GPU too: every operator of a cell, from the data to the
    diagnostics, has a deterministic CUDA kernel. (Read off the CPU: operators that decompose, such as adaptive
    average pooling to 1x1, which is a mean, decompose the same way on both.)"""
    from bench import models

    seen = Operators()
    with seen:
        train(params("train.max_steps=2"), Cell("residual_bn", 8, 0), tmp_path / "cell", digits_dir, progress=False)
        for variant in models.VARIANTS:  # every architecture's forward and backward, under either shortcut
            for shortcut in SHORTCUTS:
                net = models.build_model(variant, 8, shortcut=shortcut, num_classes=10, in_channels=1)
                torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 8, 8)), torch.arange(4)).backward()
    assert {"convolution_backward", "native_batch_norm_backward", "mean"} <= seen.names  # it saw the cell
    assert not seen.names & CUDA_RAISES_WHEN_DETERMINISTIC


def test_absurd_learning_rate_diverges_without_raising(params, tmp_path, digits_dir):
    m = train(params("train.lr=1000", "train.max_steps=60"), Cell("plain", 8, 0), tmp_path, digits_dir, progress=False)
    assert m["diverged"] is True
    assert 0 <= m["diverged_step"] < 60
    assert m["steps"] < 60  # stopped early
    saved = json.loads((tmp_path / "metrics.json").read_text())  # valid JSON: no NaN
    assert saved["diverged_step"] == m["diverged_step"]
    assert all(saved[f"{split}/{k}"] is None for split in ("train", "val", "test") for k in ("error", "loss"))
    assert "end" not in json.loads((tmp_path / "diagnostics.json").read_text())  # nothing to measure
    assert saved["train/clean_error"] is None
    assert all(len(a) == 0 for a in load_file(str(tmp_path / "predictions.safetensors")).values())  # no NaN argmax


def test_cli_diverged_run_exits_zero_and_says_so(cli, tmp_path, digits_dir):
    code, out, err = cli(
        "train",
        "--variant",
        "plain",
        "--depth",
        "8",
        "--out",
        tmp_path,
        "--data",
        digits_dir,
        "train.lr=1000",
        "train.max_steps=30",
        *QUICK,
    )
    assert code == 0, err
    assert "plain-8-0: digits (md5 " in out  # the one-line summary at the start
    assert ", 30 steps at batch 64, lr 1000 (x0.1 at 100, 125), projection shortcuts, cpu x1 32-true" in out
    assert "diverged" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["diverged"]


@pytest.mark.slow
def test_readme_run_residual_bn_20(tmp_path, digits_dir):
    r = bench(
        "train",
        "--variant",
        "residual_bn",
        "--depth",
        "20",
        "--seed",
        "0",
        "--out",
        tmp_path,
        "--data",
        digits_dir,
        "wandb.mode=disabled",
        *DIGITS,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["test/error"] < 0.1


SWEEP = [  # plain and plain_bn at lr 1.0
    "grid.variants=[plain, plain_bn]",
    "lr_sweep.depth=8",
    "lr_sweep.lrs=[1.0]",
    "lr_sweep.max_steps=30",
    *PROBE,
]


def test_lr_sweep_bn_trains_where_plain_diverges(params, tmp_path, digits_dir):
    from bench.lr_sweep import sweep

    rows = sweep(params(*SWEEP), digits_dir, tmp_path, workers=1)
    results = {r["variant"]: r for r in rows}
    plain, bn = results["plain"], results["plain_bn"]
    assert plain["diverged"] or plain["train/error"] > 0.8  # diverges, or dies at chance
    assert not bn["diverged"]
    assert bn["train/error"] < 0.8
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][1]["variant"] == "plain_bn"


@pytest.mark.integration
def test_lr_sweep_in_a_pool_of_processes_gives_the_rows_of_one_process(params, tmp_path, digits_dir):
    from bench.lr_sweep import sweep

    p = params(*SWEEP)
    assert sweep(p, digits_dir, tmp_path / "pool", workers=2) == sweep(p, digits_dir, tmp_path / "one", workers=1)


def test_history_is_rewritten_only_when_an_epoch_row_changes(tmp_path):
    from bench.train.callbacks import HistoryLogger

    log = HistoryLogger(tmp_path / "history.csv")
    log.end_epoch(0, 10, {"train/loss": 2.0, "train/error": 0.5})  # the epoch's end: its row, saved
    (tmp_path / "history.csv").write_text("sentinel")  # a rewrite would replace this
    log.log_metrics({"epoch": 1, "train/loss_step": 1.0}, step=14)  # step-level: no epoch row changes
    log.save()  # Lightning calls save() after every log_metrics
    assert (tmp_path / "history.csv").read_text() == "sentinel"
    log.log_metrics({"epoch": 0, "train/loss": 2.0}, step=9)  # the same value again: the row has not changed
    log.end_epoch(1, 20, {"train/loss": 1.5, "train/error": 0.4})
    rows = read_history(tmp_path)
    assert [r["step"] for r in rows] == ["10", "20"]
    assert rows[1]["train/loss"] == "1.5"
