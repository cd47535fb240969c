"""`bench grid`: cells in parallel slots, forked cells that are `bench train`, failed cells and logs, time left."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml
from helpers import GRID_PARAMS, PARAMS, ROOT, run, set_params, write_grid

from bench import config
from bench.progress import estimate
from bench.record import Cell
from bench.scale import cell_process, launcher
from bench.scale.launcher import in_process_argv, time_left
from bench.scale.recorder import Recorder, commit_cells
from bench.scale.stages import stage_command

TIMING = ("wall_time_s", "images_per_s")  # how fast, not what: they differ between two runs of one cell


def test_time_left_hands_the_queue_to_the_first_free_worker():
    a, b = Cell("plain", 8, 0), Cell("plain", 8, 1)
    assert time_left([a], {}, {}, 2, 0.0) is None  # nothing finished yet: no estimate
    finished = {Cell("plain", 8, 9): 10.0}
    assert time_left([a, b], {}, finished, 2, 0.0) == 10.0  # side by side
    assert time_left([a, b], {}, finished, 1, 0.0) == 20.0  # one after the other
    assert time_left([b], {a: 100.0}, finished, 2, 104.0) == 10.0  # a ends in 6 s, b on the idle worker
    assert time_left([b], {a: 100.0}, finished, 1, 104.0) == 16.0  # b after a
    assert estimate(Cell("plain", 56, 0), finished) == pytest.approx(70.0)  # no 56-layer cell yet: by depth


def test_grid_launcher_runs_the_command_dvc_yaml_declares(tmp_path):
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
    assert len(results) == 4
    assert sorted(calls) == ["0", "0", "1", "1"]  # 2 GPUs x 2 workers: 4 slots, together
    assert not together.broken


def test_each_cell_is_recorded_in_dvc_lock_as_it_finishes_while_the_next_trains(tmp_path, monkeypatch):
    """A launcher killed after some cells finished loses none of them: each success is committed as it finishes
    (a failure never), not all at the end; and no worker waits for the commit: the next cell starts meanwhile."""
    started = {f"plain-8-{s}": threading.Event() for s in range(3)}
    committed = threading.Event()
    commits = []

    def fake_run_cell(cell, gpu, log_dir, threads, overrides, main):
        started[cell.name].set()
        if cell.name == "plain-8-2":  # the last cell ends only once the first is recorded
            assert committed.wait(10), "plain-8-0 was not recorded before the last cell ended"
        return {"cell": cell.name, "gpu": gpu, "returncode": int(cell.seed == 1), "start": 0.0, "end": 1.0}

    def fake_commit(names):
        if "plain-8-0" in names:  # the worker freed by plain-8-0 does not wait for its commit
            assert started["plain-8-1"].wait(10), "the next cell waited for the commit"
            committed.set()
        commits.append(names)

    monkeypatch.setattr(launcher, "run_cell", fake_run_cell)
    monkeypatch.setattr(launcher, "dvc", lambda *a, **k: None)
    monkeypatch.setattr(launcher, "commit_cells", fake_commit)
    monkeypatch.setattr(launcher, "stale_cells", lambda p: [Cell("plain", 8, s) for s in range(3)])
    launcher.launch(config.load(PARAMS), 1, None, tmp_path, commit=True)
    assert commits == [["plain-8-0"], ["plain-8-2"]]  # plain-8-1 failed: never recorded


def test_the_recorder_takes_every_cell_finished_meanwhile_in_one_commit():
    committing, release, batches = threading.Event(), threading.Event(), []

    def record(names):
        committing.set()
        release.wait(10)  # a slow commit, while three more cells finish
        batches.append(names)

    r = Recorder(record)
    r.add("a")
    assert committing.wait(10)  # the thread is committing "a"
    for name in "bcd":
        r.add(name)
    release.set()
    r.close()
    assert batches == [["a"], ["b", "c", "d"]]


def test_the_recorder_waits_its_interval_between_commits_but_not_for_the_first_or_the_last():
    batches, times, committed = [], [], threading.Semaphore(0)

    def record(names):
        times.append(time.monotonic())
        batches.append(names)
        committed.release()

    start = time.monotonic()
    r = Recorder(record, interval=2.0)
    r.add("a")
    assert committed.acquire(timeout=10)
    for name in "bcd":  # within the interval: one batch, once it has passed
        r.add(name)
    assert committed.acquire(timeout=10)
    r.add("e")  # close comes before the next interval has passed: recorded at once
    r.close()
    assert batches == [["a"], ["b", "c", "d"], ["e"]]
    assert times[0] - start < 1.5  # the first cell did not wait
    assert times[1] - times[0] >= 1.9
    assert times[2] - times[1] < 1.5  # nor did the last batch


def test_a_failed_commit_stops_the_recording_and_is_raised():
    def record(names):
        raise ValueError(f"dvc commit failed for {names}")

    r = Recorder(record)
    r.add("a")
    with pytest.raises(ValueError, match=r"\['a'\]"):
        r.close()
    assert r.recorded == []


def test_the_stage_command_runs_in_process_only_when_it_is_bench():
    argv = in_process_argv(stage_command(Cell("plain_bn", 20, 1), ROOT / "dvc.yaml"))
    assert argv[:7] == ["train", "--variant", "plain_bn", "--depth", "20", "--seed", "1"]
    assert in_process_argv(["/usr/bin/env", "bench", "train"]) is None  # another program: a subprocess


def test_a_cells_output_reaches_its_log_at_the_file_descriptor_level(tmp_path):
    log = tmp_path / "cell.log"
    code = (
        "import os, subprocess, sys; from bench.scale.cell_process import redirect_output; "
        f"redirect_output({str(log)!r}); print('from print'); sys.stderr.write('from stderr\\n'); "
        "os.write(1, b'from fd 1\\n'); os.write(2, b'from fd 2\\n'); subprocess.run(['echo', 'from a subprocess'])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == r.stderr == "", r.stderr
    text = log.read_text()
    for line in ("from print", "from stderr", "from fd 1", "from fd 2", "from a subprocess"):
        assert line in text


def test_jobs_is_the_flag(cli, monkeypatch):
    monkeypatch.chdir(ROOT)  # params.yaml
    for flag in ("-j", "--jobs"):
        code, _, err = cli("grid", flag, "0")
        assert code == 2
        assert "--jobs must be at least 1" in err


def stage_files(tmp_path, monkeypatch):
    """A folder holding only params.yaml and dvc.yaml, as the cwd, and DVC stubbed out: the launcher's cells
    alone, with no data."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launcher, "dvc", lambda *a, **k: None)


def test_a_cell_ends_cleanly_where_wandb_is_not_installed(monkeypatch):
    """A GPU node may lack W&B: cells run with wandb.mode=disabled, and the end of a forked cell must not import it."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where it is not installed
    cell_process.finish_wandb(0)
    ended, finished = [], []
    wandb = type(sys)("wandb")
    wandb.run, wandb.teardown = None, ended.append  # no run open: a cell whose run was finished, or never started
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    cell_process.finish_wandb(0)
    assert ended == [0] and finished == []
    wandb.run = type("Run", (), {"finish": lambda self, exit_code: finished.append(exit_code)})()
    cell_process.finish_wandb(3)  # a failed cell's run, still open
    assert finished == [3] and ended == [0, 3]  # ended with the cell's exit code, then the service let go


@pytest.mark.integration
def test_a_failed_cell_fails_the_grid_and_names_its_log(cli, tmp_path, monkeypatch):
    stage_files(tmp_path, monkeypatch)  # no data/prepared: the cell stops with bench's exit 2
    monkeypatch.setattr(launcher, "stale_cells", lambda p: [Cell("plain", 8, 0)])
    code, out, _ = cli("grid", "-j", "1", "--logs", "logs")
    log = tmp_path / "logs/plain-8-0.log"
    assert code == 1
    assert "[1/1] plain-8-0 FAILED" in out
    assert "(exit 2; log: logs/plain-8-0.log)" in out
    assert "bench train: error:" in log.read_text()  # the cell's own stderr, in its log ...
    assert "bench train: error:" in out  # ... and its last lines under the progress line
    assert "1 of 1 cells failed: logs/plain-8-0.log" in out
    assert not (tmp_path / "runs/plain-8-0/metrics.json").exists()


@pytest.mark.integration
def test_a_cell_forked_from_the_forkserver_is_a_bench_train(repo):
    """The same metrics, diagnostics and history as `bench train` of the cell in a process of its own, with
    the same threads; its output, stdout and stderr, in its log; W&B's offline run written and closed."""
    set_params(
        repo,
        grid={"variants": ["plain_bn", "residual"], "depths": [8], "seeds": [1]},
        train={"max_steps": 30},
        wandb={"mode": "offline"},
        trainer={"accelerator": "cpu", "deterministic": True},
        toy={"depths": [1, 4], "seeds": 1},
    )
    out = run("bench grid --jobs 2", repo).stdout
    assert "2 of 2 cells to train, 2 at a time" in out
    assert "[2/2]" in out
    assert "recorded 2 cells" in out
    threads = max(1, (os.cpu_count() or 1) // 2)  # what the launcher gives each of its 2 processes
    for cell in ("plain_bn-8-1", "residual-8-1"):
        variant, depth, seed = cell.split("-")
        run(
            f"OMP_NUM_THREADS={threads} bench train --variant {variant} --depth {depth} --seed {seed} "
            f"--data data/prepared --out direct/{cell} --no-progress",
            repo,
        )
        forked, direct = repo / "runs" / cell, repo / "direct" / cell
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (forked, direct))
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
        for name in ("diagnostics.json", "history.csv"):
            assert (forked / name).read_text() == (direct / name).read_text(), name
        log = (repo / "logs/grid" / f"{cell}.log").read_text()
        assert f"{cell}: test error" in log, log  # bench's stdout
        assert "`Trainer.fit` stopped" in log, log  # Lightning's stderr
    runs = list((repo / "wandb").glob("offline-run-*"))
    assert len(runs) == 4  # two cells, each forked and direct
    for folder in runs:  # each run closed (W&B's own log; its console summary is off outside a terminal)
        assert "finishing run" in (folder / "logs/debug.log").read_text(), folder


@pytest.mark.integration
def test_grid_launcher_runs_two_cells_at_a_time_then_dvc_has_nothing_to_redo(repo):
    set_params(
        repo,
        grid={"variants": ["plain", "residual_bn"], "depths": [8], "seeds": [0, 1]},
        train={"max_steps": 20},
        wandb={"mode": "disabled"},
        trainer={"accelerator": "cpu"},
        lr_sweep={"depth": 8, "lrs": [0.1], "max_steps": 10},
        toy={"depths": [1, 4], "seeds": 1},
    )
    out = run("bench grid --jobs 2", repo).stdout
    assert "4 of 4 cells to train, 2 at a time" in out
    assert "[4/4]" in out
    assert "recorded 4 cells" in out
    for cell in ("plain-8-0", "plain-8-1", "residual_bn-8-0", "residual_bn-8-1"):
        assert json.loads((repo / "runs" / cell / "metrics.json").read_text())["steps"] == 20
    status = run("dvc status --json", repo).stdout
    assert "train@" not in status  # every cell recorded in dvc.lock
    rest = run("dvc repro", repo).stdout
    assert "Running stage 'train@" not in rest
    assert "Running stage 'report'" in rest
    again = run("bench grid --jobs 2", repo).stdout
    assert "0 of 4 cells to train" in again


def test_a_cell_whose_only_change_is_its_weights_missing_is_not_retrained():
    """A fresh clone has each cell's results (git) but not its weights (DVC's cache): not out of date."""
    from bench.scale.launcher import only_weights_missing

    assert only_weights_missing([{"changed outs": {"runs/plain-8-0/weights.safetensors": "deleted"}}])
    assert only_weights_missing([{"changed outs": {"runs/plain-8-0/weights.safetensors": "not in cache"}}])  # a clone
    assert not only_weights_missing([{"changed outs": {"runs/plain-8-0/metrics.json": "deleted"}}])
    assert not only_weights_missing([{"changed outs": {"runs/plain-8-0/weights.safetensors": "modified"}}])
    assert not only_weights_missing(
        [
            {"changed deps": {"bench/train": "modified"}},
            {"changed outs": {"runs/plain-8-0/weights.safetensors": "deleted"}},
        ]
    )


def test_a_cell_started_by_the_launcher_ends_with_it(tmp_path):
    """kill -9 of `bench grid` must leave no cell training on as an orphan (it would hold the cell's lock and
    write results no launcher records): the cell's process asks for a signal when its parent ends."""
    code = (
        "import os, sys, time; from bench.scale.cell_process import die_with_parent; "
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    die_with_parent(); print(os.getpid(), flush=True); time.sleep(60); sys.exit(0)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(parent.stdout.readline())
    parent.kill()  # kill -9
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie that init has not reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_grid_ends_with_a_compact_results_table(tmp_path):
    from bench.scale.results import results_table

    p = config.load(PARAMS, [*GRID_PARAMS])
    assert results_table(p, tmp_path / "runs") is None  # nothing finished yet
    write_grid(tmp_path / "runs")
    lines = results_table(p, tmp_path / "runs").splitlines()
    assert lines[0] == "| test error %, mean ± 95 % t | depth 20 | depth 56 | depth 110 |"
    # mean ± t(0.975, n-1) s / sqrt(n): 4.303 x 0.20 / sqrt(3) = 0.50; 12.706 x 0.0707 / sqrt(2) = 0.64
    assert lines[2] == "| plain | 9.20 ± 0.50 (n=3) | 89.95 ± 0.64 (n=2; 1/3 diverged) | 3/3 diverged |"
    assert lines[3].startswith("| residual_bn | 8.60 ± 0.50 (n=3) |")


def test_commit_cells_records_several_train_stages_in_dvc_lock_and_refuses_an_unknown_one(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n    matrix:\n      cell: [a, b, c]\n"
        "    cmd: echo ${item.cell} > ${item.cell}.txt\n    outs:\n      - ${item.cell}.txt\n"
    )
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text(f"{name}\n")
    with pytest.raises(ValueError, match="no stage train@zz"):
        commit_cells(["a", "zz"])
    assert not (tmp_path / "dvc.lock").exists()  # nothing recorded
    commit_cells(["a", "b"])
    assert "Updating lock file" not in capfd.readouterr().out  # the grid's progress lines only
    status = json.loads(run(["dvc", "status", "--json"], cwd=tmp_path).stdout)
    assert sorted(status) == ["train@c"]  # a and b recorded as if `dvc repro` had made them


def test_forget_cells_drops_the_lock_entries_of_cells_the_grid_no_longer_has(tmp_path, monkeypatch):
    from bench.scale.recorder import forget_cells

    monkeypatch.chdir(tmp_path)
    run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path)
    stage = "    matrix:\n      cell: {}\n    cmd: echo ${{item.cell}} > ${{item.cell}}.txt\n"
    stage += "    outs:\n      - ${{item.cell}}.txt\n"
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n" + stage.format("[a, b, c]"))
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text(f"{name}\n")
    commit_cells(["a", "b", "c"])
    assert forget_cells(["a", "b", "c"]) == []  # nothing to drop: the file is not rewritten
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n" + stage.format("[a, b]"))  # a smaller grid
    assert forget_cells(["a", "b"]) == ["c"]
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == ["train@a", "train@b"]
    assert json.loads(run(["dvc", "status", "--json"], cwd=tmp_path).stdout) == {}  # a and b still recorded


def test_the_cells_share_one_w_and_b_service_started_by_the_launcher_and_none_without_w_and_b(monkeypatch):
    import wandb

    wandb.teardown()  # as in a launcher's process, where no W&B was set up before (an earlier test's is)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    launcher.share_wandb_service(config.load(PARAMS, ["wandb.mode=disabled"]))
    assert "WANDB_SERVICE" not in os.environ
    try:
        launcher.share_wandb_service(config.load(PARAMS, ["wandb.mode=offline"]))
        assert os.environ["WANDB_SERVICE"]  # what cell_env copies into every cell's environment
        assert launcher.cell_env(1)["WANDB_SERVICE"] == os.environ["WANDB_SERVICE"]
    finally:
        wandb.teardown()
