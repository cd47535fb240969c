"""bench slurm's scripts follow the params, and a requeued cell records only its own, final results."""

import json
import shutil
import subprocess

import pytest
from helpers import DIGITS, PARAMS, ROOT, crash_after_epoch

from bench import config
from bench.record import Cell
from bench.scale.slurm import render, write
from bench.train import callbacks
from bench.train.stage import train


def scripts(*overrides, **kw):
    return render(config.load(PARAMS, list(overrides)), "/scratch/bench", dvc_yaml=ROOT / "dvc.yaml", **kw)


def test_a_cell_gets_the_tasks_and_gpus_trainer_asks_for():
    s = scripts("trainer.devices=2", "trainer.num_nodes=1", "trainer.accelerator=gpu")
    for name in ("grid.sbatch", "ddp_cell.sbatch"):
        assert "#SBATCH --ntasks-per-node=2\n" in s[name] and "#SBATCH --gres=gpu:2\n" in s[name], name
    cpu = scripts("trainer.devices=2", "trainer.accelerator=cpu")
    assert "--gres" not in "".join(cpu.values()) and "#SBATCH --ntasks-per-node=2\n" in cpu["grid.sbatch"]


def test_the_commit_job_has_a_device_for_the_stages_that_train():
    commit = scripts("trainer.accelerator=gpu")["commit.sbatch"]
    assert "#SBATCH --gres=gpu:1\n" in commit and "dvc repro" in commit


@pytest.mark.parametrize("devices", ["auto", "-1"])
def test_devices_slurm_cannot_allocate_are_refused(devices):
    with pytest.raises(ValueError, match="bench slurm needs trainer.devices as a number"):
        scripts(f"trainer.devices={devices}")


def test_submit_and_logs_follow_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    paths = {p.name: p for p in write(config.load(PARAMS), "cluster/jobs", str(tmp_path))}
    submit = paths["submit.sh"].read_text()
    assert '"$here/grid.sbatch"' in submit and '"$here/commit.sbatch"' in submit and "slurm/" not in submit
    assert (tmp_path / "cluster/jobs/logs").is_dir()  # SLURM opens a job's log before the job runs
    assert f"#SBATCH --output={tmp_path}/cluster/jobs/logs/%x-%A.out" in paths["ddp_cell.sbatch"].read_text()
    for p in paths.values():
        subprocess.run(["bash", "-n", str(p)], check=True)


@pytest.mark.parametrize("command", ["grid", "slurm"])
def test_another_params_file_is_refused_for_the_stages(cli, tmp_path, command):
    other = tmp_path / "other.yaml"
    shutil.copy(PARAMS, other)
    code, _, err = cli(command, "--params", other)
    assert code == 2 and "reads params.yaml" in err


def fake_slurm(monkeypatch):
    """The variables a SLURM batch job has, for Lightning's SLURMEnvironment (the real scheduler: test_cluster.py)."""
    for k, v in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "bench-grid",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(k, v)


def test_a_requeued_cell_records_its_final_weights_not_the_requeue_checkpoint(tmp_path, digits_dir, monkeypatch):
    p = config.load(
        PARAMS,
        ["trainer.accelerator=cpu", "wandb.mode=disabled", *DIGITS, "train.max_steps=40", "trainer.deterministic=true"],
    )
    whole = train(p, Cell("plain", 8, 0), tmp_path / "whole", digits_dir, progress=False)
    crash_after_epoch(
        monkeypatch, 1, lambda: train(p, Cell("plain", 8, 0), tmp_path / "requeued", digits_dir, progress=False)
    )
    cell = tmp_path / "requeued"
    (cell / "last.ckpt").rename(cell / "hpc_ckpt_1.ckpt")  # what Lightning saves on SIGUSR1, at step 20
    fake_slurm(monkeypatch)
    requeued = train(p, Cell("plain", 8, 0), cell, digits_dir, progress=False)
    assert requeued["steps"] == 40
    for k in ("test/error", "test/loss", "train/loss"):  # the final weights' results, as uninterrupted
        assert requeued[k] == pytest.approx(whole[k], rel=1e-6), k
    assert json.loads((cell / "metrics.json").read_text())["test/error"] == requeued["test/error"]


def test_a_cell_requeued_mid_epoch_ends_like_an_uninterrupted_run(tmp_path, digits_dir, monkeypatch):
    """Lightning saves its requeue checkpoint on SIGUSR1, mid-epoch: the resumed run skips the batches done."""
    p = config.load(
        PARAMS,
        ["trainer.accelerator=cpu", "wandb.mode=disabled", *DIGITS, "train.max_steps=40", "trainer.deterministic=true"],
    )
    whole = train(p, Cell("residual_bn", 8, 0), tmp_path / "whole", digits_dir, progress=False)
    cell = tmp_path / "requeued"
    batch_end = callbacks.Divergence.on_train_batch_end

    def preempted_at_step_15(self, trainer, module, outputs, batch, batch_idx):
        batch_end(self, trainer, module, outputs, batch, batch_idx)
        if trainer.global_step == 15:  # in the middle of the second epoch (10 steps each)
            trainer.save_checkpoint(cell / "hpc_ckpt_1.ckpt")
            raise RuntimeError("preempted")

    monkeypatch.setattr(callbacks.Divergence, "on_train_batch_end", preempted_at_step_15)
    with pytest.raises(RuntimeError, match="preempted"):
        train(p, Cell("residual_bn", 8, 0), cell, digits_dir, progress=False)
    monkeypatch.setattr(callbacks.Divergence, "on_train_batch_end", batch_end)
    fake_slurm(monkeypatch)
    requeued = train(p, Cell("residual_bn", 8, 0), cell, digits_dir, progress=False)
    for k in ("steps", "test/error", "test/loss", "train/loss", "val/loss", "end/shattering"):
        assert requeued[k] == pytest.approx(whole[k], rel=1e-6), k
