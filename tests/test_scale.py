"""Scale-out on CPU: resume after kill -9, DDP (gloo) against one process, the test set counted once."""

import json
import signal
import subprocess
import threading
import time

import pytest
import torch
from helpers import PARAMS, QUICK, ROOT, bench_argv

from bench import config
from bench.record import Cell
from bench.train.resume import checkpoint_to_resume, run_key


def bench_train(out, data, *overrides, variant="residual_bn", depth=20):
    cmd = bench_argv("train", "--variant", variant, "--depth", depth, "--out", out, "--data", data, *QUICK, *overrides)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def stop_at_checkpoint(proc, ckpt, min_step: int, timeout: float = 300) -> int:
    """Freeze `proc` (SIGSTOP) as soon as `ckpt` holds a step >= min_step; return that step.

    Each new checkpoint freezes the run while it is read, so however loaded the machine, the run
    cannot finish between the check and the kill."""
    deadline, seen = time.time() + timeout, None
    while time.time() < deadline and proc.poll() is None:
        stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if stamp is not None and stamp != seen:
            proc.send_signal(signal.SIGSTOP)
            seen = ckpt.stat().st_mtime_ns  # the rename is atomic: a complete file, frozen now
            step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
            if step >= min_step:
                return step
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint at step >= {min_step} before the run ended ({proc.poll()=})")


@pytest.mark.integration
def test_kill_9_then_rerun_resumes_and_ends_like_an_uninterrupted_run(tmp_path, digits_dir):
    args = ["trainer.deterministic=true", "train.max_steps=200"]
    killed = bench_train(tmp_path / "killed", digits_dir, *args)
    assert 30 <= stop_at_checkpoint(killed, tmp_path / "killed/last.ckpt", min_step=30) < 200
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
    p = config.load(PARAMS, ["train.lr=0.1"])
    cell = Cell("plain", 8, 0)
    key = run_key(p, cell, "md5")
    assert key != run_key(config.load(PARAMS, ["train.lr=0.2"]), cell, "md5")
    assert key == run_key(config.load(PARAMS, ["train.lr=0.1", "wandb.project=x", "grid.seeds=[0, 1]"]), cell, "md5")
    torch.save({"hyper_parameters": {"run_key": "other"}, "global_step": 5}, tmp_path / "last.ckpt")
    path, message = checkpoint_to_resume(tmp_path, key)
    assert path is None and "other params" in message and not (tmp_path / "last.ckpt").exists()
    torch.save({"hyper_parameters": {"run_key": key}, "global_step": 5}, tmp_path / "last.ckpt")
    path, message = checkpoint_to_resume(tmp_path, key)
    assert path == str(tmp_path / "last.ckpt") and "step 5" in message


def test_the_run_key_follows_the_code_that_trains_the_cell(tmp_path):
    import shutil

    from bench.code import code_hash
    from bench.train.resume import TRAIN_ENTRY

    shutil.copytree(ROOT / "bench", tmp_path / "bench")
    assert code_hash(TRAIN_ENTRY, tmp_path) == code_hash(TRAIN_ENTRY)
    (tmp_path / "bench/report/stage.py").write_text("# the report does not train\n")
    assert code_hash(TRAIN_ENTRY, tmp_path) == code_hash(TRAIN_ENTRY)
    with open(tmp_path / "bench/models.py", "a") as f:
        f.write("# a changed model: dvc repro reruns the cell, and its old checkpoint must not be resumed\n")
    assert code_hash(TRAIN_ENTRY, tmp_path) != code_hash(TRAIN_ENTRY)


@pytest.mark.integration
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, digits_dir):
    # no BN (or SyncBN) and no augmentation: both see the same 128 images per step, so the averaged
    # gradients and the whole run agree up to float reduction order
    args = ["train.max_steps=20", "train.augment=false", "trainer.deterministic=true"]
    one = bench_train(tmp_path / "one", digits_dir, *args, variant="residual", depth=8)
    finish(one)
    two = bench_train(
        tmp_path / "two", digits_dir, *args, "trainer.devices=2", "trainer.strategy=ddp", variant="residual", depth=8
    )
    finish(two)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-3)
    assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-3)
    assert json.loads((tmp_path / "two/env.json").read_text())["world_size"] == 2


def test_a_global_batch_that_does_not_divide_fails_before_training(cli, tmp_path, digits_dir):
    code, _, err = cli(
        "train",
        "--variant",
        "plain",
        "--depth",
        "8",
        "--out",
        tmp_path / "out",
        "--data",
        digits_dir,
        *QUICK,
        "train.batch_size=127",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )
    assert code == 2 and "train.batch_size=127 does not divide across 2 processes" in err
    assert not (tmp_path / "out").exists()  # refused before the cell's folder was touched


@pytest.mark.integration
def test_grid_launcher_runs_two_cells_at_a_time_then_dvc_has_nothing_to_redo(repo):
    from helpers import run, set_params

    set_params(
        repo,
        grid={"variants": ["plain", "residual_bn"], "depths": [8], "seeds": [0, 1]},
        train={"max_steps": 20},
        wandb={"mode": "disabled"},
        trainer={"accelerator": "cpu"},
        lr_sweep={"depth": 8, "lrs": [0.1], "max_steps": 10},
        toy={"depths": [1, 4], "seeds": 1},
    )
    out = run("bench grid --workers-per-gpu 2", repo).stdout
    assert "4 of 4 cells to train, 2 at a time" in out and "[4/4]" in out and "recorded 4 cells" in out
    for cell in ("plain-8-0", "plain-8-1", "residual_bn-8-0", "residual_bn-8-1"):
        assert json.loads((repo / "runs" / cell / "metrics.json").read_text())["steps"] == 20
    status = run("dvc status --json", repo).stdout
    assert "train@" not in status  # every cell recorded in dvc.lock
    rest = run("dvc repro", repo).stdout
    assert "Running stage 'train@" not in rest and "Running stage 'report'" in rest
    again = run("bench grid --workers-per-gpu 2", repo).stdout
    assert "0 of 4 cells to train" in again


def test_grid_launcher_runs_the_command_dvc_yaml_declares(tmp_path):
    from bench.scale.stages import stage_command

    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text((ROOT / "dvc.yaml").read_text().replace("--data data/prepared", "--data elsewhere"))
    cmd = stage_command(Cell("plain_bn", 20, 1), dvc_yaml)
    assert cmd[-11:] == [
        "train",
        "--variant",
        "plain_bn",
        "--depth",
        "20",
        "--seed",
        "1",
        "--data",
        "elsewhere",
        "--out",
        "runs/plain_bn-20-1",
    ]
    assert cmd[0].endswith("bench") or cmd[-12:-11] == ["bench"]  # the venv's script, or python -m bench


def test_grid_launcher_overlaps_cells(tmp_path, monkeypatch):
    from bench.scale import launcher

    calls = []
    together = threading.Barrier(4, timeout=60)  # passes only once 4 cells run at the same time

    def fake_run_cell(cell, gpu, log_dir, threads, overrides, main):  # the pool logic only
        calls.append(gpu)
        together.wait()  # raises BrokenBarrierError if the slots ran the cells one after another
        return {"cell": cell.name, "gpu": gpu, "returncode": 0, "start": 0.0, "end": 0.0}

    monkeypatch.setattr(launcher, "run_cell", fake_run_cell)
    monkeypatch.setattr(launcher, "dvc", lambda *a, **k: None)
    monkeypatch.setattr(launcher, "stale_cells", lambda p: [Cell("plain", 8, s) for s in range(4)])
    results = launcher.launch(config.load(PARAMS), 2, ["0", "1"], tmp_path, commit=False)
    assert len(results) == 4 and sorted(calls) == ["0", "0", "1", "1"]  # 2 GPUs x 2 workers: 4 slots, together
    assert not together.broken


def test_slurm_scripts_render_for_the_grid(tmp_path):
    from bench.scale.slurm import write

    p = config.load(
        PARAMS,
        [
            "grid.variants=[plain, residual_bn]",
            "grid.depths=[20, 56]",
            "grid.seeds=[0, 1, 2]",
            "trainer.devices=4",
            "trainer.num_nodes=2",
        ],
    )
    dvc_yaml = tmp_path / "dvc.yaml"  # the cells run what dvc.yaml's train stage declares
    dvc_yaml.write_text((ROOT / "dvc.yaml").read_text().replace("--data data/prepared", "--data elsewhere"))
    scripts = tmp_path / "slurm"
    paths = {
        x.name: x for x in write(p, scripts, "/scratch/bench", partition="gpu", time="12:00:00", dvc_yaml=dvc_yaml)
    }
    array = paths["grid.sbatch"].read_text()
    assert (
        'srun bench train --variant "${VARIANTS[$i]}" --depth "${DEPTHS[$i]}" --seed "${SEEDS[$i]}" '
        '--data elsewhere --out runs/"${VARIANTS[$i]}"-"${DEPTHS[$i]}"-"${SEEDS[$i]}" --no-progress'
    ) in array
    assert "#SBATCH --array=0-11%32" in array and "#SBATCH --signal=SIGUSR1@90" in array
    assert "#SBATCH --requeue" in array and "#SBATCH --partition=gpu" in array and "cd /scratch/bench" in array
    assert "CELLS=(plain-20-0 plain-20-1 plain-20-2 plain-56-0" in array and "srun bench train" in array
    ddp = paths["ddp_cell.sbatch"].read_text()
    assert 'srun bench train --variant "$V" --depth "$D" --seed "$S" --data elsewhere --out runs/"$V"-"$D"-"$S"' in ddp
    assert "#SBATCH --nodes=2" in ddp and "#SBATCH --ntasks-per-node=4" in ddp and "#SBATCH --gres=gpu:4" in ddp
    assert "train@residual_bn-56-2" in paths["commit.sbatch"].read_text()
    assert "--dependency=afterok:${jid}" in paths["submit.sh"].read_text()
    for x in paths.values():
        subprocess.run(["bash", "-n", str(x)], check=True)


def test_lightning_detects_slurm_and_requeue_checkpoints_are_resumed(tmp_path, monkeypatch):
    import lightning as L
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    for k, v in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "bench-grid",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_ARRAY_JOB_ID": "4240",
        "SLURM_ARRAY_TASK_ID": "2",
    }.items():
        monkeypatch.setenv(k, v)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue and SLURMEnvironment.job_id() == 4242
    torch.save({"hyper_parameters": {"run_key": "any"}, "global_step": 5}, tmp_path / "hpc_ckpt_1.ckpt")  # on SIGUSR1
    path, message = checkpoint_to_resume(tmp_path, "any")
    assert path is None and "SLURM requeue checkpoint" in message  # None: Lightning picks hpc_ckpt_N itself
    path, message = checkpoint_to_resume(tmp_path, "other params")  # changed while the job waited in the queue
    assert (path, message) == (None, None) and not list(tmp_path.glob("hpc_ckpt_*"))
    assert (tmp_path / "hpc-ckpt-1.other-run-1.ckpt").exists()  # set aside, under a name Lightning never picks
