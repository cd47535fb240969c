"""W&B: one offline run per cell, organised for the report and read back with `wandb leet`; the mode; quiet cells."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BIN, QUICK, bench

from bench import record, tracking
from bench.record import Cell
from bench.report.wandb_report import build_report, log_grid
from bench.train.stage import train

SECRET = "0123456789abcdef-not-a-real-key-0123456789"


def records(run_dir):
    out = subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def offline_runs(root):
    return sorted((root / "wandb").glob("offline-run-*"))


def run_info(run_dir) -> tuple[dict, list]:
    recs = records(run_dir)
    return next(r["run"] for r in recs if r.get("type") == "run"), recs


@pytest.mark.integration  # every stage end to end: seconds; make test-all and CI run it
def test_each_cell_writes_one_offline_run_organised_for_the_report(params, tmp_path, digits_dir, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # present, but params say offline: it must go nowhere
    monkeypatch.setenv("DVC_EXP_NAME", "exp-lr")
    p = params(
        "wandb.mode=offline",
        f"wandb.dir={tmp_path / 'wb'}",
        "train.max_steps=30",
        "train.milestones=[20]",
        "train.batch_size=128",
        "train.lr=0.05",
        "model.shortcut=projection",
    )
    cells = [Cell("plain", 8, 0), Cell("residual_bn", 8, 0)]
    metrics = {c.name: train(p, c, tmp_path / c.name, digits_dir, progress=False) for c in cells}
    runs = {info["display_name"]: (info, recs) for info, recs in map(run_info, offline_runs(tmp_path / "wb"))}
    assert sorted(runs) == sorted(metrics)  # one run per cell, matched by name (folders sort by time, not cell)
    for v, d, s in cells:
        m = metrics[f"{v}-{d}-{s}"]
        info, recs = runs[f"{v}-{d}-{s}"]
        assert info["job_type"] == v
        assert info["run_group"] == "digits-30it-b128-lr0.05-projection-exp-lr"
        assert set(info["tags"]) == {v, "depth-8", "digits"}
        config = {}
        for r in recs:
            if r.get("type") in ("run", "config"):
                config.update((r.get("run") or r)["config"]["update"])
        assert {
            "train",
            "model",
            "data",
            "trainer",
            "cell",
            "data_md5",
            "git",
            "versions",
            "hardware",
            "world_size",
        } <= set(config)
        history = [r["history"]["item"] for r in recs if r.get("type") == "history"]
        epochs = [h for h in history if "train/error" in h]
        assert len(epochs) == m["epochs"] == 3  # one point per epoch
        assert len([h for h in history if "val/error" in h]) == 3
        assert len([h for h in history if "gap" in h]) == 3
        assert all(math.isfinite(h[k]) for h in epochs for k in ("train/error", "train/loss", "lr", "gap"))
        summary = {}
        for r in recs:
            if r.get("type") == "summary":
                summary.update(r["summary"]["update"])
        assert summary["test/error"] == pytest.approx(m["test/error"])
        assert summary["diverged"] is False
    everything = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())
    assert SECRET.encode() not in everything
    check_printed_commands(p, tmp_path)
    check_report_run(p, tmp_path, cells)


def check_report_run(p, tmp_path, cells):
    """The report run carries the figures of the stages that study cells as images, those drawn only."""
    import matplotlib.image

    (tmp_path / "curvature").mkdir()
    matplotlib.image.imsave(tmp_path / "curvature/curvature.png", [[0.0, 1.0], [1.0, 0.0]])
    figures = {"curvature": tmp_path / "curvature/curvature.png", "paths": tmp_path / "paths/paths.png"}
    log_grid(p, [record.load(tmp_path, c) for c in cells], figures)
    info, recs = next(r for r in map(run_info, offline_runs(tmp_path / "wb")) if r[0]["job_type"] == "report")
    logged = {k: v for r in recs if r.get("type") == "history" for k, v in r["history"]["item"].items()}
    assert logged["figures/curvature._type"] == "image-file"  # W&B's records flatten a value's fields into keys
    assert not [k for k in logged if k.startswith("figures/paths")]  # not drawn: nothing logged


def check_printed_commands(p, tmp_path):
    """The lines `bench wandb` prints work as printed with the pinned wandb: the sync line (dry run: it parses
    and finds both runs, uploading nothing) and the offline viewer's summary."""
    lines = tracking.sync_lines(p).splitlines()
    sync = next(line.strip() for line in lines if line.strip().startswith("wandb sync"))
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_MODE": "offline"}
    r = subprocess.run(f"{sync} --dry-run", shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(run.name in r.stdout + r.stderr for run in offline_runs(tmp_path / "wb"))
    summary = next(line.split("(")[0].strip() for line in lines if "leet inspect --summary" in line)
    r = subprocess.run(summary, shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test/error" in r.stdout, r.stdout + r.stderr


def test_disabled_mode_writes_nothing(params, tmp_path, digits_dir):
    train(
        params("wandb.mode=disabled", f"wandb.dir={tmp_path / 'wb'}", "train.max_steps=10"),
        Cell("plain", 8, 0),
        tmp_path / "cell",
        digits_dir,
        progress=False,
    )
    assert not (tmp_path / "wb").exists()


def test_mode_defaults_to_offline_without_a_key(params, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.mode(params("wandb.mode=null")) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    assert tracking.mode(params("wandb.mode=null")) == "online"


def test_the_environment_s_wandb_mode_wins_over_the_key(params, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.mode(params("wandb.mode=null")) == "offline"


def test_run_folders_default_to_the_parent_repo_in_queued_experiments(params, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.root_dir(params("wandb.dir=null")) == tmp_path


@pytest.mark.integration
def test_two_process_ddp_writes_one_run(tmp_path, digits_dir, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    r = bench(
        "train",
        "--variant",
        "residual_bn",
        "--depth",
        "8",
        "--out",
        tmp_path / "cell",
        "--data",
        digits_dir,
        "--no-progress",
        "train.max_steps=20",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "wandb.mode=offline",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(offline_runs(tmp_path / "wb")) == 1
    updates = [x["config"]["update"] for x in records(offline_runs(tmp_path / "wb")[0]) if x.get("type") == "config"]
    assert {"world_size": 2, "precision": "32-true"}.items() <= {k: v for u in updates for k, v in u.items()}.items()
    assert r.stdout.count("wrote") == 1  # rank 0 reports, rank 1 stays quiet
    assert "W&B could not record" not in r.stdout + r.stderr  # the run is finished by rank 0 alone
    assert json.loads((tmp_path / "cell/env.json").read_text())["world_size"] == 2


def test_report_spec_builds_offline(params):
    p = params("grid.variants=[plain, residual_bn]", "wandb.group=g1", "wandb.project=proj")
    report = build_report(p)
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grids) == 7  # ... and a section per stage that studies trained cells
    assert report.project == "proj"
    assert grids[0].runsets[0].filters == "Group = 'g1' and JobType = 'plain'"
    assert [pl.y for pl in grids[1].panels] == [["train/error"], ["test/error"], ["gap"]]
    assert all(pl.groupby == "config.cell.depth" for g in grids[:2] for pl in g.panels)
    assert grids[2].panels[0].x.name == "cell.depth"
    assert [pl.y.name for pl in grids[3].panels] == [
        "init/spp_growth",
        "end/spp_growth",
        "init/branch_ratio",
        "end/branch_ratio",
    ]
    assert all(g.runsets[0].filters == "Group = 'g1' and JobType = 'report'" for g in grids[4:])
    assert [pl.media_keys for g in grids[4:] for pl in g.panels] == [
        ["figures/landscape"],
        ["figures/curvature"],
        ["figures/paths"],
    ]


def test_lightning_s_per_cell_lines_stop_at_bench_quiet(cli, params, tmp_path, digits_dir):
    """The quick check of the test below, in this process: Lightning's per-cell lines reach its loggers' handlers
    only past bench.quiet's filter, and W&B's logger is not handed the `anonymous` setting wandb warns about."""
    import logging

    from bench import quiet

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    loggers = [logging.getLogger(name) for name in quiet.LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        code, out, err = cli(
            "train",
            "--variant",
            "plain",
            "--depth",
            "8",
            "--seed",
            "0",
            "--data",
            digits_dir,
            "--out",
            tmp_path / "cell",
            *QUICK,
            "train.max_steps=10",
        )
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert code == 0, err
    assert "plain-8-0: test error" in out
    assert any("max_steps=10" in line for line in lines), lines  # Lightning's lines reach the handler ...
    for noise in ("Tip", "GPU available"):  # ... but not these
        assert not [line for line in [*lines, *(out + err).splitlines()] if noise in line], noise
    p = params("wandb.mode=offline", f"wandb.dir={tmp_path / 'wb'}")
    assert "anonymous" not in tracking.logger(p, Cell("plain", 8, 0), "digits", {})._wandb_init


@pytest.mark.integration
def test_a_cell_prints_none_of_the_per_cell_noise(tmp_path, digits_dir):
    """bench.quiet drops Lightning's tip and device lines and the checkpoint reload lines, and wandb is not
    handed the `anonymous` setting it warns about; the cell's own result line still prints."""
    from helpers import DIGITS, run

    r = run(
        [
            str(BIN / "bench"),
            "train",
            "--variant",
            "plain",
            "--depth",
            "8",
            "--seed",
            "0",
            "--data",
            digits_dir,
            "--out",
            tmp_path / "cell",
            "--no-progress",
            "wandb.mode=offline",
            f"wandb.dir={tmp_path / 'wb'}",
            "train.max_steps=10",
            *DIGITS,
        ]
    )
    out = r.stdout + r.stderr
    for noise in ("Tip", "GPU available", "anonymous", "weights_only", "Restoring states", "srun"):
        assert noise not in out, noise
    assert "plain-8-0: test error" in out


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_a_wandb_dir_that_cannot_hold_runs_falls_back_and_says_where(params, tmp_path, capsys, where):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file/wb" if where == "under a file" else Path("/proc/bench-wb")
    out = tracking.writable_root(params(f"wandb.dir={bad}"))
    said = capsys.readouterr().err
    assert out.is_dir()
    assert not out.is_relative_to(bad)
    assert f"W&B: {bad} cannot hold runs" in said
    assert f"this run goes to {out}/wandb instead" in said


def test_runs_are_written_quietly_outside_a_terminal_or_under_dvc(params, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    kw = lambda: tracking.run_kwargs(params(), "c", "plain", [], {})
    assert kw()["settings"] == {"quiet": False}  # a person watches: W&B's summary at the end
    monkeypatch.setenv("DVC_STAGE", "train@plain-8-0")
    assert kw()["settings"] == {"quiet": True}
    monkeypatch.delenv("DVC_STAGE")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert kw()["settings"] == {"quiet": True}


def test_online_without_a_key_exits_2_before_any_work(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no `wandb login` either
    code, _, err = cli("wandb", "--report", "wandb.mode=online")
    assert code == 2
    assert "no W&B API key for api.wandb.ai" in err
    assert len(err.strip().splitlines()) == 1


def test_offline_runs_are_listed_by_cell(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cell, run_id in (("plain-8-0", "aaaa1111"), ("residual_bn-8-0", "bbbb2222")):
        (tmp_path / "runs" / cell).mkdir(parents=True)
        (tmp_path / "runs" / cell / "wandb_run_id").write_text(run_id + "\n")
        (tmp_path / f"wandb/offline-run-20261204_010203-{run_id}").mkdir(parents=True)
    (tmp_path / "wandb/offline-run-20261204_010204-cccc3333").mkdir()  # its cell folder is gone
    lines = tracking.sync_lines(params(f"wandb.dir={tmp_path}")).splitlines()
    assert any(
        line.split() == ["plain-8-0", f"{tmp_path}/wandb/offline-run-20261204_010203-aaaa1111"] for line in lines
    )
    assert any(line.split()[0] == "residual_bn-8-0" for line in lines)
    assert any(line.split()[:2] == ["(no", "cell)"] for line in lines)


def test_credentials_in_a_source_url_reach_neither_the_run_s_config_nor_config_yaml(params):
    from bench.train import settings

    p = params("data.source=https://ada:s3cret@example.org/images.tar.gz?token=abc")
    recorded = json.dumps(settings.wandb_config(p, Cell("plain", 8, 0), "0" * 32, {}))
    assert "s3cret" not in recorded
    assert "abc" not in recorded
    assert "example.org/images.tar.gz" in recorded
