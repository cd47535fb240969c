"""The ablation pipeline: dvc.yaml agrees with params.yaml, the real `dvc repro` end to end, the report."""

import csv
import dataclasses
import json
import re
import shlex
import time

import pytest
import yaml
from helpers import PARAMS, ROOT, run, set_params

from bench import config
from bench.report.stage import aggregate, fmt_cell, report

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SMALL = {"lr_sweep": {"depth": 8, "lrs": [0.1], "max_steps": 10}, "toy": {"depths": [1, 4], "seeds": 1}}


def test_matrix_axes_come_from_params_and_declared_params_exist():
    params = yaml.safe_load(PARAMS.read_text())
    matrix = DVC["stages"]["train"]["matrix"]
    assert matrix == {"variant": "${grid.variants}", "depth": "${grid.depths}", "seed": "${grid.seeds}"}
    for name, stage in DVC["stages"].items():
        for p in stage.get("params", []):
            section, _, key = p.partition(".")
            assert section in params and (not key or key in params[section]), f"{name} declares unknown param {p}"
    # every ${...} in dvc.yaml names an existing param or a matrix item
    for ref in re.findall(r"\$\{([^}]+)\}", (ROOT / "dvc.yaml").read_text()):
        section, _, key = ref.partition(".")
        assert (section == "item" and key in matrix) or key in params[section], ref


def recording(params: config.Params, reads: set) -> config.Params:
    """A copy of `params` whose sections add each key read to `reads`, as "section.key"."""

    def wrap(name, section):
        cls = type(section)

        class Recorded(cls):  # still the section's class: dataclasses.replace and asdict work, and record
            def __getattribute__(self, key):
                if key in cls.__dataclass_fields__:
                    reads.add(f"{name}.{key}")
                return object.__getattribute__(self, key)

        return Recorded(**{f.name: object.__getattribute__(section, f.name) for f in dataclasses.fields(section)})

    return config.Params(**{f.name: wrap(f.name, getattr(params, f.name)) for f in dataclasses.fields(params)})


# reads that cannot change a stage's outputs: `bench train` shows the cell's place in the grid ("cell 3/12")
DISPLAY_ONLY = {"train": {"grid.variants", "grid.depths", "grid.seeds"}}


def test_stages_declare_the_params_their_code_reads(cli, tmp_path, monkeypatch):
    """Run every stage's command from dvc.yaml on a tiny grid, with params that note each key read; each stage
    must declare exactly what its code reads (dvc repro reruns it when one changes, and only then)."""
    from bench.scale.stages import substitute

    (tmp_path / "params.yaml").write_text(PARAMS.read_text())
    set_params(
        tmp_path,
        grid={"variants": ["residual_bn"], "depths": [8], "seeds": [0]},
        train={"max_steps": 10, "milestones": [5]},
        lr_sweep={"depth": 8, "lrs": [0.1], "max_steps": 5},
        toy={"depths": [1, 2], "seeds": 1, "points": 16},
        trainer={"accelerator": "cpu"},
        wandb={"mode": "offline", "dir": str(tmp_path / "wb")},
    )
    monkeypatch.chdir(tmp_path)
    reads: set = set()
    load = config.load
    monkeypatch.setattr(config, "load", lambda *a, **k: recording(load(*a, **k), reads))
    for name in ("prepare", "train", "lr_sweep", "toy", "report"):  # in dvc.yaml's order: each needs the last
        stage = DVC["stages"][name]
        reads.clear()
        code, _, err = cli(*shlex.split(substitute(stage["cmd"], "residual_bn", 8, 0))[1:])
        assert code == 0, f"{name}: {err[-2000:]}"
        declared = stage["params"]
        covered = lambda key: any(key == d or key.startswith(d + ".") for d in declared)
        undeclared = sorted(k for k in reads - DISPLAY_ONLY.get(name, set()) if not covered(k))
        unread = sorted(d for d in declared if not any(k == d or k.startswith(d + ".") for k in reads))
        assert not undeclared, f"stage {name} reads {undeclared} but does not declare them in dvc.yaml"
        assert not unread, f"stage {name} declares {unread} but its code reads none of it"


@pytest.mark.integration
def test_end_to_end_dvc_repro_on_a_tiny_grid(repo):
    set_params(
        repo,
        grid={"variants": ["plain", "residual_bn"], "depths": [8], "seeds": [0, 1]},
        train={"max_steps": 20, "milestones": [15]},
        wandb={"mode": "offline"},
        **SMALL,
    )
    r = run("dvc repro", repo)
    assert "cell 1/4 plain-8-0" in r.stdout and "cell 4/4 residual_bn-8-1" in r.stdout
    # the training bar, without a validation bar per epoch or Lightning's warning about our own cell folder
    shown = r.stdout + r.stderr
    assert "Epoch 0" in shown and "Validation DataLoader" not in shown and "Checkpoint directory" not in shown
    for cell in ("plain-8-0", "plain-8-1", "residual_bn-8-0", "residual_bn-8-1"):
        m = json.loads((repo / "runs" / cell / "metrics.json").read_text())
        assert m["steps"] == 20 and 0 <= m["test/error"] <= 1
        assert (repo / "runs" / cell / "last.ckpt").exists() and (repo / "runs" / cell / "history.csv").exists()
    for f in (
        "report.md",
        "metrics.json",
        "error_vs_depth.csv",
        "figures/convergence.png",
        "figures/error_vs_depth.png",
        "figures/gap_vs_depth.png",
        "figures/shattering_vs_depth.png",
        "figures/grad_rms_per_block.png",
        "figures/relative_grad_per_block.png",
        "figures/response_std.png",
        "figures/lesion.png",
        "figures/lr_sweep.png",
        "toy/toy_shattering.png",
    ):
        assert (repo / "report" / f).stat().st_size > 0, f
    assert "(n=2)" in (repo / "report/report.md").read_text()
    wandb_runs = sorted((repo / "wandb").glob("offline-run-*"))  # offline by default: 4 cells + the report run
    assert len(wandb_runs) == 5
    shown = json.loads(run("dvc metrics show --json", repo).stdout)
    assert any("runs/plain-8-0/metrics.json" in json.dumps(v) for v in shown.values())

    again = run("dvc repro", repo)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout

    set_params(repo, grid={"seeds": [0, 1, 2]})  # one more seed: only its cells and the report run
    more = run("dvc repro", repo).stdout
    assert set(re.findall(r"Running stage '([^']+)'", more)) == {"train@plain-8-2", "train@residual_bn-8-2", "report"}
    set_params(repo, toy={"seeds": 2})  # a toy param: only the toy stage and the report
    assert set(re.findall(r"Running stage '([^']+)'", run("dvc repro", repo).stdout)) == {"toy", "report"}


@pytest.mark.integration
def test_dvc_exp_run_with_a_param_override(repo):
    set_params(
        repo,
        grid={"variants": ["residual_bn"], "depths": [8], "seeds": [0]},
        train={"max_steps": 10},
        wandb={"mode": "disabled"},
        **SMALL,
    )
    run("git add -A && git commit -qm init", repo)
    run("dvc exp run -S train.lr=0.02", repo)
    shown = json.loads(run("dvc exp show --json", repo).stdout)
    text = json.dumps(shown)
    assert '"lr": 0.02' in text and "test/error" in text
    status = run("git status --porcelain --untracked-files=all", repo).stdout.split("\n")
    assert not [
        s
        for s in status
        if s.strip()
        and "dvc.lock" not in s
        and "params.yaml" not in s
        and "runs/" not in s
        and "runs_lr/summary.json" not in s
        and "report/" not in s
        and "data/" not in s
        and ".gitignore" not in s
    ], status


def cell(variant, depth, seed, test, train=0.1, diverged=False):
    return {
        "variant": variant,
        "depth": depth,
        "seed": seed,
        "test/error": None if diverged else test,
        "train/error": None if diverged else train,
        "diverged": diverged,
        "diverged_step": 7 if diverged else None,
        "gap": None if diverged else test - train,
        "dataset": "cifar10",
    }


def test_aggregation_mean_std_and_diverged_cells():
    results = [cell("residual_bn", 20, s, t) for s, t in enumerate([0.08, 0.09, 0.10])]
    results += [cell("plain", 20, 0, 0.3), cell("plain", 20, 1, None, diverged=True)]
    results += [cell("plain", 56, 0, None, diverged=True)]
    agg = aggregate(results)
    r = agg["residual_bn", 20]["test/error"]
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.09) and r["std"] == pytest.approx(0.01)  # sample std
    assert fmt_cell(agg["residual_bn", 20]) == "9.00 ± 1.00 (n=3)"
    assert agg["plain", 20]["diverged"] == 1 and fmt_cell(agg["plain", 20]) == "30.00 (n=1; 1/2 diverged)"
    assert fmt_cell(agg["plain", 56]) == "diverged (1/1)" and agg["plain", 56]["diverged_steps"] == [7]
    assert agg["residual_bn", 20]["gap"]["mean"] == pytest.approx(-0.01)


def write_cell(runs, m, steps=(10, 20)):
    d = runs / f"{m['variant']}-{m['depth']}-{m['seed']}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))
    with open(d / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["epoch", "step", "lr", "train/loss", "train/error", "val/loss", "val/error", "test/loss", "test/error"]
        )
        for i, s in enumerate(steps):
            w.writerow([i, s, 0.1, 1, 0.5, 1, 0.5, "nan" if m["diverged"] else 1, 0.6])


def test_report_from_hand_made_cells(tmp_path):
    params = config.load(PARAMS, ["grid.variants=[plain, residual_bn]", "grid.depths=[20, 56]", "grid.seeds=[0, 1]"])
    runs = tmp_path / "runs"
    for v in ("plain", "residual_bn"):
        for d in (20, 56):
            for s in (0, 1):
                write_cell(runs, cell(v, d, s, 0.1 + 0.01 * s, diverged=(v == "plain" and d == 56)))
    summary = report(params, runs, tmp_path / "report")
    md = (tmp_path / "report/report.md").read_text()
    assert "| 56 | diverged (2/2) | 10.50 ± 0.71 (n=2) | 6.97 (single run) | 6.61 |" in md  # He et al., akamaster
    assert summary["diverged"] == 2 and summary["test/error/residual_bn-20"] == pytest.approx(0.105)
    rows = list(csv.DictReader(open(tmp_path / "report/error_vs_depth.csv")))
    assert (
        rows[1]["depth"] == "56" and rows[1]["plain"] == "NaN" and float(rows[1]["residual_bn"]) == pytest.approx(10.5)
    )


def test_report_names_a_missing_cell(tmp_path):
    params = config.load(PARAMS, ["grid.variants=[plain]", "grid.depths=[20]", "grid.seeds=[0]"])
    with pytest.raises(ValueError, match="no results for cell plain-20-0"):
        report(params, tmp_path / "runs", tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_the_progress_line_estimates_from_finished_cells_only(tmp_path):
    from bench.progress import progress_line
    from bench.record import Cell

    p = config.load(PARAMS, ["grid.variants=[plain, residual_bn]", "grid.depths=[8]", "grid.seeds=[0, 1]"])
    runs = tmp_path / "runs"
    assert progress_line(p, Cell("residual_bn", 8, 0), runs) == "cell 3/4 residual_bn-8-0"  # nothing finished yet
    (runs / "plain-8-1").mkdir(parents=True)
    (runs / "plain-8-1/metrics.json").write_text("{half written")  # a cell of the grid running beside this one
    assert progress_line(p, Cell("residual_bn", 8, 0), runs) == "cell 3/4 residual_bn-8-0"
    (runs / "plain-8-0").mkdir()
    (runs / "plain-8-0/metrics.json").write_text('{"wall_time_s": 30}')
    assert progress_line(p, Cell("residual_bn", 8, 0), runs).endswith("about 1m00s of training left in the grid")


@pytest.mark.integration
def test_dvc_s_own_queue_runs_two_experiments_and_loses_nothing(repo):
    set_params(
        repo,
        grid={"variants": ["plain", "residual_bn"], "depths": [8], "seeds": [0]},
        train={"max_steps": 10, "milestones": [5]},
        wandb={"mode": "offline"},
        trainer={"accelerator": "cpu"},
        **SMALL,
    )
    run("git add -A && git commit -qm init", repo)
    for lr in ("0.02", "0.03"):
        run(f"dvc exp run --queue -S train.lr={lr} -n lr{lr.replace('.', '')}", repo)
    run("dvc queue start -j 2", repo)
    deadline = time.time() + 600
    while "Queued" in (q := run("dvc queue status", repo).stdout) or "Running" in q:
        assert time.time() < deadline, q
        time.sleep(2)
    assert q.count("Success") == 2, q
    shown = json.loads(run("dvc exp show --json", repo).stdout)
    text = json.dumps(shown)
    for name, lr in (("lr002", 0.02), ("lr003", 0.03)):
        assert name in text and f'"lr": {lr}' in text
    assert text.count('"test/error"') >= 4  # both experiments' cells, with their metrics
    # each cell's W&B run outlived the temporary workspace: 2 experiments x (2 cells + the report run)
    assert len(list((repo / "wandb").glob("offline-run-*"))) == 6
    run("dvc exp apply lr002", repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"] == 0.02
    metrics = json.loads((repo / "runs/plain-8-0/metrics.json").read_text())
    assert metrics["steps"] == 10
    run("dvc queue stop", repo, check=False)
    time.sleep(3)
    left = run("pgrep -f 'dvc.*queue|celery|dvc-task' -a || true", repo).stdout
    assert str(repo) not in left and "dvc exp" not in left, left  # no worker left behind
