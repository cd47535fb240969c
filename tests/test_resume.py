"""Resuming a cell: run keys, other runs' checkpoints set aside, crash or kill -9 and rerun, SLURM requeue, history."""

import csv
import json
import os
import shutil
import signal
import subprocess
import time
import warnings

import pytest
import torch
from helpers import DIGITS, PARAMS, PROBE, QUICK, ROOT, bench_argv

from bench import config
from bench.record import Cell
from bench.run_key import TRAIN_ENTRY, run_key
from bench.train import callbacks, resume
from bench.train.stage import train

CELL = Cell("residual_bn", 8, 0)  # BatchNorm: its running statistics must come back too
# 3 epochs of 10 steps; small diagnostics, compared all the same
QUICK_RUN = [
    "trainer.accelerator=cpu",
    "wandb.mode=disabled",
    *DIGITS,
    "train.max_steps=30",
    "train.batch_size=128",  # 10 steps an epoch on the 1,293 training digits
    "trainer.deterministic=true",
    *PROBE,
]
RESULTS = ("steps", "test/error", "test/loss", "train/loss", "val/loss", "end/shattering")


def crash_after_epoch(monkeypatch, epoch: int, run) -> None:
    """`run()` (a training) crashing at the end of training epoch `epoch`, right after that epoch's checkpoint:
    a kill or a preemption, in this process. The crash is undone afterwards."""
    end_of_epoch = callbacks.EpochCheckpoint.on_train_epoch_end

    def crash(self, trainer, module):
        end_of_epoch(self, trainer, module)
        if trainer.current_epoch == epoch:
            raise RuntimeError("crashed")

    monkeypatch.setattr(callbacks.EpochCheckpoint, "on_train_epoch_end", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        run()
    monkeypatch.setattr(callbacks.EpochCheckpoint, "on_train_epoch_end", end_of_epoch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_dir):
    """The cell trained once uninterrupted ("whole", and its results), and once crashed after epoch 1 with its
    checkpoint at step 20 ("crashed"); each test works on a copy."""
    ws = tmp_path_factory.mktemp("resume")
    p = config.load(PARAMS, QUICK_RUN)
    seen = []  # (the checkpoint's epoch, history.csv on disk as it was written) per checkpoint of "whole"
    save = resume.AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, storage_options=None):
        with open(ws / "whole/history.csv") as f:
            seen.append((checkpoint["epoch"], {int(r["epoch"]): r for r in csv.DictReader(f)}))
        save(self, checkpoint, path, storage_options)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(resume.AtomicCheckpointIO, "save_checkpoint", spy)
        whole = train(p, CELL, ws / "whole", digits_dir, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        crash_after_epoch(mp, 1, lambda: train(p, CELL, ws / "crashed", digits_dir, progress=False))
    assert not (ws / "crashed/metrics.json").exists()
    return {"params": p, "whole": whole, "dir": ws, "checkpoints": seen}


def test_every_checkpoint_is_written_after_its_epoch_s_whole_history_row(runs):
    """A kill between an epoch's checkpoint and its history row would leave a hole that the resumed run never
    fills: so when a checkpoint is written, history.csv on disk already holds the epoch's row, training loss
    and error included."""
    seen = runs["checkpoints"]
    assert [epoch for epoch, _ in seen[:3]] == [0, 1, 2]  # one per epoch (then the final weights')
    for epoch, rows in seen[:3]:
        assert rows[epoch]["train/loss"]
        assert rows[epoch]["train/error"]
        assert rows[epoch]["step"] == str(10 * (epoch + 1))


def copy(runs, name, tmp_path):
    return shutil.copytree(runs["dir"] / name, tmp_path / name)


# --- the run key ---


def test_a_checkpoint_of_other_params_is_set_aside_never_deleted(tmp_path):
    p = config.load(PARAMS, ["train.lr=0.1"])
    key = run_key(p, CELL, "md5")
    assert key != run_key(config.load(PARAMS, ["train.lr=0.2"]), CELL, "md5")
    assert key == run_key(config.load(PARAMS, ["train.lr=0.1", "wandb.project=x", "grid.seeds=[0, 1]"]), CELL, "md5")
    for n in (1, 2):  # one after the other: both kept, none overwritten
        torch.save({"hyper_parameters": {"run_key": f"other {n}"}, "global_step": 5}, tmp_path / "last.ckpt")
        saved = (tmp_path / "last.ckpt").read_bytes()
        path, message = resume.checkpoint_to_resume(tmp_path, key)
        assert path is None
        assert "other params" in message
        assert f"last.other-run-{n}.ckpt" in message
        assert not (tmp_path / "last.ckpt").exists()
        assert (tmp_path / f"last.other-run-{n}.ckpt").read_bytes() == saved
    torch.save({"hyper_parameters": {"run_key": key}, "global_step": 5}, tmp_path / "last.ckpt")
    path, message = resume.checkpoint_to_resume(tmp_path, key)
    assert path == str(tmp_path / "last.ckpt")
    assert "step 5" in message


def test_only_the_finished_runs_set_aside_checkpoints_are_removed(tmp_path):
    for name, content in [
        ("last.other-run-1.ckpt", {"finished": True}),  # a finished run's final checkpoint
        ("last.other-run-2.ckpt", {"finished": False}),  # an epoch's: the run was killed
        ("last.other-run-3.ckpt", {}),  # written before checkpoints said whether they were final
        ("last.ckpt", {"finished": True}),  # the run's own
    ]:
        torch.save({"hyper_parameters": {"run_key": name}, "global_step": 5, **content}, tmp_path / name)
    (tmp_path / "last.other-run-4.ckpt").write_bytes(b"cannot be read")
    assert resume.remove_finished_set_aside(tmp_path) == ["last.other-run-1.ckpt"]
    left = ["last.ckpt", "last.other-run-2.ckpt", "last.other-run-3.ckpt", "last.other-run-4.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_a_rerun_with_other_params_trains_afresh_in_place_of_the_finished_run(runs, tmp_path, digits_dir):
    cell = copy(runs, "whole", tmp_path)
    p = config.load(PARAMS, [*QUICK_RUN, "train.lr=0.03", "train.max_steps=10"])
    m = train(p, CELL, cell, digits_dir, progress=False)
    assert m["steps"] == 10  # not resumed at step 30
    assert [f.name for f in cell.glob("*.ckpt")] == ["last.ckpt"]  # one checkpoint: the new run's
    final = resume.load(cell / "last.ckpt")
    assert final["hyper_parameters"]["run_key"] == m["run_key"]
    assert final["finished"] is True


def test_a_rerun_with_other_params_sets_an_unfinished_checkpoint_aside(runs, tmp_path, digits_dir):
    cell = copy(runs, "crashed", tmp_path)
    crashed = (cell / "last.ckpt").read_bytes()  # step 20 of 30: no metrics.json records it
    p = config.load(PARAMS, [*QUICK_RUN, "train.lr=0.03", "train.max_steps=10"])
    assert train(p, CELL, cell, digits_dir, progress=False)["steps"] == 10  # not resumed at step 20
    assert (cell / "last.other-run-1.ckpt").read_bytes() == crashed


def test_unreadable_checkpoints_are_set_aside_one_by_one(tmp_path):
    for n in (1, 2):
        (tmp_path / "last.ckpt").write_bytes(b"not a checkpoint %d" % n)
        path, message = resume.checkpoint_to_resume(tmp_path, "key")
        assert path is None
        assert f"last.unreadable-{n}.ckpt" in message
    assert (tmp_path / "last.unreadable-1.ckpt").read_bytes() == b"not a checkpoint 1"
    assert (tmp_path / "last.unreadable-2.ckpt").read_bytes() == b"not a checkpoint 2"


def test_the_run_key_follows_the_code_that_trains_the_cell(tmp_path):
    from bench.code import code_hash

    shutil.copytree(ROOT / "bench", tmp_path / "bench")
    assert code_hash(TRAIN_ENTRY, tmp_path) == code_hash(TRAIN_ENTRY)
    (tmp_path / "bench/report/stage.py").write_text("# the report does not train\n")
    assert code_hash(TRAIN_ENTRY, tmp_path) == code_hash(TRAIN_ENTRY)
    with open(tmp_path / "bench/models.py", "a") as f:
        f.write("# a changed model: dvc repro reruns the cell, and its old checkpoint must not be resumed\n")
    assert code_hash(TRAIN_ENTRY, tmp_path) != code_hash(TRAIN_ENTRY)


# --- a crash, a kill, and the rerun ---


def test_history_steps_after_a_resume_are_those_of_an_uninterrupted_run(runs, tmp_path, digits_dir):
    cell = copy(runs, "crashed", tmp_path)
    resumed = train(runs["params"], CELL, cell, digits_dir, progress=False)
    steps = [(d / "history.csv").read_text().splitlines() for d in (runs["dir"] / "whole", cell)]
    assert [r.split(",")[1] for r in steps[1]] == [r.split(",")[1] for r in steps[0]]
    assert [r.split(",")[1] for r in steps[1]] == ["step", "10", "20", "30"]
    assert resumed["steps"] == runs["whole"]["steps"]
    assert resumed["steps"] == 30


def test_a_finished_cell_rerun_trains_nothing_and_keeps_its_recorded_timings(runs, tmp_path, digits_dir):
    cell = copy(runs, "whole", tmp_path)
    (cell / ".last.ckpt.999999999.tmp").write_bytes(b"half a checkpoint")  # a kill -9 mid-write left it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = train(runs["params"], CELL, cell, digits_dir, progress=False)
    assert again["steps"] == 30
    for timing in ("wall_time_s", "images_per_s"):
        assert again[timing] == runs["whole"][timing]
    assert {k: v for k, v in again.items()} == runs["whole"]
    assert [str(w.message)[:80] for w in caught] == []  # quiet.py's list holds a resume's known warnings
    assert not (cell / ".last.ckpt.999999999.tmp").exists()  # no process 999999999: its leftover is removed


def test_a_run_that_ends_mid_epoch_records_the_final_weights_validation_and_so_does_its_rerun(tmp_path, digits_dir):
    p = config.load(PARAMS, [*QUICK_RUN, "train.max_steps=25"])  # 10 steps an epoch: the fit validates at 10 and 20
    first = train(p, CELL, tmp_path, digits_dir, progress=False)
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["10", "20", "25"]
    assert rows[-1]["val/loss"] == ""  # the fit's last validation is at step 20, of other weights
    assert first["val/loss"] is not None
    assert first["val/loss"] != pytest.approx(float(rows[-2]["val/loss"]))
    assert train(p, CELL, tmp_path, digits_dir, progress=False) == first  # resumed with no step left: the same


def bench_train(out, data, *overrides):
    cmd = bench_argv(
        "train", "--variant", "residual_bn", "--depth", 20, "--out", out, "--data", data, *QUICK, *overrides
    )
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
    step = stop_at_checkpoint(killed, tmp_path / "killed/last.ckpt", min_step=30)
    assert 30 <= step < 200
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


# --- SLURM's requeue checkpoints ---


def test_no_slurm_resume_is_claimed_outside_slurm(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(k)
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")  # Lightning resumes these only under SLURM
    assert resume.checkpoint_to_resume(tmp_path, "key") == (None, None)


def test_a_requeue_checkpoint_is_left_to_lightning_unless_its_params_changed(tmp_path, fake_slurm):
    fake_slurm()
    torch.save({"hyper_parameters": {"run_key": "any"}, "global_step": 5}, tmp_path / "hpc_ckpt_1.ckpt")  # on SIGUSR1
    path, message = resume.checkpoint_to_resume(tmp_path, "any")
    assert path is None  # None: Lightning picks hpc_ckpt_N itself
    assert "SLURM requeue checkpoint" in message
    path, message = resume.checkpoint_to_resume(tmp_path, "other params")  # changed while the job waited in the queue
    assert (path, message) == (None, None)
    assert not list(tmp_path.glob("hpc_ckpt_*"))
    assert (tmp_path / "hpc-ckpt-1.other-run-1.ckpt").exists()  # set aside, under a name Lightning never picks


def test_a_requeued_cell_records_its_final_weights_not_the_requeue_checkpoint(runs, tmp_path, digits_dir, fake_slurm):
    cell = copy(runs, "crashed", tmp_path)
    (cell / "last.ckpt").rename(cell / "hpc_ckpt_1.ckpt")  # what Lightning saves on SIGUSR1, at step 20
    fake_slurm()
    requeued = train(runs["params"], CELL, cell, digits_dir, progress=False)
    for k in RESULTS:  # the final weights' results, as uninterrupted
        assert requeued[k] == pytest.approx(runs["whole"][k], rel=1e-6), k
    assert json.loads((cell / "metrics.json").read_text())["test/error"] == requeued["test/error"]


def test_a_cell_requeued_mid_epoch_ends_like_an_uninterrupted_run(runs, tmp_path, digits_dir, monkeypatch, fake_slurm):
    """Lightning saves its requeue checkpoint on SIGUSR1, mid-epoch: the resumed run skips the batches done."""
    cell = tmp_path / "requeued"
    batch_end = callbacks.Divergence.on_train_batch_end

    def preempted_at_step_15(self, trainer, module, outputs, batch, batch_idx):
        batch_end(self, trainer, module, outputs, batch, batch_idx)
        if trainer.global_step == 15:  # in the middle of the second epoch (10 steps each)
            trainer.save_checkpoint(cell / "hpc_ckpt_1.ckpt")
            raise RuntimeError("preempted")

    monkeypatch.setattr(callbacks.Divergence, "on_train_batch_end", preempted_at_step_15)
    with pytest.raises(RuntimeError, match="preempted"):
        train(runs["params"], CELL, cell, digits_dir, progress=False)
    monkeypatch.setattr(callbacks.Divergence, "on_train_batch_end", batch_end)
    fake_slurm()
    requeued = train(runs["params"], CELL, cell, digits_dir, progress=False)
    for k in RESULTS:
        assert requeued[k] == pytest.approx(runs["whole"][k], rel=1e-6), k
    with open(cell / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["train/loss"] != "" for r in rows] == [True, False, True]  # the requeued epoch's mean is not the epoch's
    assert rows[1]["test/error"]  # its evaluation is whole
