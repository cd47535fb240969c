"""The ablation pipeline: dvc.yaml agrees with params.yaml and the code; the real `dvc repro` and `dvc exp`."""

import dataclasses
import json
import re
import shlex
import time
from pathlib import Path

import pytest
import yaml
from archives import write_imagefolder
from helpers import PARAMS, ROOT, metrics, run, set_params, write_cell

from bench import config

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SMALL = {
    "lr_sweep": {"depth": 8, "lrs": [0.1], "max_steps": 10},
    "toy": {"depths": [1, 4], "seeds": 1},
    "landscape": {"resolution": 3, "subset": 16},
    "curvature": {"subset": 8, "samples": 2},
    "paths": {"subset": 8, "samples": 1},
}


def test_matrix_axes_come_from_params_and_declared_params_exist():
    params = yaml.safe_load(PARAMS.read_text())
    matrix = DVC["stages"]["train"]["matrix"]
    assert matrix == {"variant": "${grid.variants}", "depth": "${grid.depths}", "seed": "${grid.seeds}"}
    for name, stage in DVC["stages"].items():
        for p in stage.get("params", []):
            section, _, key = p.partition(".")
            assert section in params, f"{name} declares unknown param {p}"
            assert not key or key in params[section], f"{name} declares unknown param {p}"
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


def within(key: str, declared: str) -> bool:
    """Whether the param `key` ("train.lr") is the declared one or in the declared section ("train")."""
    return key == declared or key.startswith(declared + ".")


# reads that cannot change a stage's outputs from params.yaml: `bench train` shows the cell's place in the grid
# ("cell 3/12"); the lr sweep sets train.lr and train.max_steps itself (from lr_sweep.lrs and lr_sweep.max_steps)
# before its runs read them, so a change of either in params.yaml leaves the sweep as it was
DISPLAY_ONLY = {"train": {"grid.variants", "grid.depths", "grid.seeds"}, "lr_sweep": {"train.lr", "train.max_steps"}}


@pytest.mark.integration  # every stage end to end: seconds; make test-all and CI run it
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
        toy={"depths": [1, 2], "seeds": 1, "points": 16, "width": 16},
        trainer={"accelerator": "cpu"},
        diagnostics={"probe_size": 64, "pairs": 2, "points": 4},
        wandb={"mode": "offline", "dir": str(tmp_path / "wb")},
        landscape=SMALL["landscape"] | {"seeds": [0]},
        curvature=SMALL["curvature"] | {"seeds": [0]},
        paths=SMALL["paths"],
    )
    monkeypatch.chdir(tmp_path)
    reads: set = set()
    load = config.load
    monkeypatch.setattr(config, "load", lambda *a, **k: recording(load(*a, **k), reads))
    stages = ("prepare", "train", "lr_sweep", "toy", "landscape", "curvature", "paths", "report")
    for name in stages:  # in dvc.yaml's order: each needs the last
        stage = DVC["stages"][name]
        reads.clear()
        code, _, err = cli(*shlex.split(substitute(stage["cmd"], "residual_bn", 8, 0))[1:])
        assert code == 0, f"{name}: {err[-2000:]}"
        declared = stage["params"]
        undeclared = sorted(k for k in reads - DISPLAY_ONLY.get(name, set()) if not any(within(k, d) for d in declared))
        unread = sorted(d for d in declared if not any(within(k, d) for k in reads))
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
    assert "cell 1/4 plain-8-0" in r.stdout
    assert "cell 4/4 residual_bn-8-1" in r.stdout
    # a line per cell and no progress bar under DVC (DVC_STAGE), nor Lightning's warning about our own cell folder
    shown = r.stdout + r.stderr
    assert "Epoch 0" not in shown
    assert "plain-8-0: digits (md5 " in shown  # what the cell runs, in one line
    assert "Validation DataLoader" not in shown
    assert "Checkpoint directory" not in shown
    for cell in ("plain-8-0", "plain-8-1", "residual_bn-8-0", "residual_bn-8-1"):
        m = json.loads((repo / "runs" / cell / "metrics.json").read_text())
        assert m["steps"] == 20
        assert 0 <= m["test/error"] <= 1
        assert (repo / "runs" / cell / "last.ckpt").exists()
        assert (repo / "runs" / cell / "history.csv").exists()
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
        "landscape/landscape.png",
        "curvature/curvature.png",
        "paths/paths.png",
    ):
        assert (repo / "report" / f).stat().st_size > 0, f
    assert "(n=2: " in (repo / "report/report.md").read_text()  # each seed beside the mean
    wandb_runs = sorted((repo / "wandb").glob("offline-run-*"))  # offline by default: 4 cells + the report run
    assert len(wandb_runs) == 5
    shown = json.loads(run("dvc metrics show --json", repo).stdout)
    assert any("runs/plain-8-0/metrics.json" in json.dumps(v) for v in shown.values())

    again = run("dvc repro", repo)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout

    set_params(repo, grid={"seeds": [0, 1, 2]})  # one more seed: its cells, the stages that study cells, the report
    more = run("dvc repro", repo).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", more))
    assert ran == {"train@plain-8-2", "train@residual_bn-8-2", "landscape", "curvature", "paths", "report"}
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
    run("dvc exp run -S train.lr=0.03", repo)
    shown = json.loads(run("dvc exp show --json", repo).stdout)
    text = json.dumps(shown)
    assert '"lr": 0.03' in text
    assert "test/error" in text
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


def test_the_progress_line_estimates_from_finished_cells_only(tmp_path):
    from bench.progress import progress_line
    from bench.record import Cell

    p = config.load(PARAMS, ["grid.variants=[plain, residual_bn]", "grid.depths=[8]", "grid.seeds=[0, 1]"])
    runs = tmp_path / "runs"
    assert progress_line(p, Cell("residual_bn", 8, 0), runs) == "cell 3/4 residual_bn-8-0"  # nothing finished yet
    (runs / "plain-8-1").mkdir(parents=True)
    (runs / "plain-8-1/metrics.json").write_text("{half written")  # a cell of the grid running beside this one
    assert progress_line(p, Cell("residual_bn", 8, 0), runs) == "cell 3/4 residual_bn-8-0"
    write_cell(runs, metrics("plain", 8, 0, 0.1, wall_time_s=30.0))
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
        assert name in text
        assert f'"lr": {lr}' in text
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
    assert str(repo) not in left, left  # no worker left behind
    assert "dvc exp" not in left, left


@pytest.mark.integration
def test_weights_follow_their_metrics_through_an_experiment_and_back(repo):
    """The second day: an experiment at another lr, then `git checkout -- .` back to the committed results. The
    weights left in the workspace are the experiment's: refused, never scored as the cell's. `dvc checkout`
    brings the committed cell's weights back, and they score what its metrics.json says."""
    set_params(
        repo,
        grid={"variants": ["residual_bn"], "depths": [8], "seeds": [0]},
        train={"max_steps": 20, "milestones": [15]},
        wandb={"mode": "disabled"},
        **SMALL,
    )
    run("dvc repro -q && git add -A && git commit -qm results", repo)
    load = (
        "from bench import weights; from bench.train.data import load_prepared; from bench import config; "
        "c = weights.load('runs/residual_bn-8-0'); t = load_prepared('data/prepared', config.load('params.yaml').data)"
        ".test; print((c.predict(t.x) != t.y).float().mean().item(), c.metrics['test/error'])"
    )
    committed = json.loads((repo / "runs/residual_bn-8-0/metrics.json").read_text())
    run("dvc exp run -q -S train.lr=0.2", repo)
    assert json.loads((repo / "runs/residual_bn-8-0/metrics.json").read_text())["run_key"] != committed["run_key"]
    run("git checkout -- .", repo)
    refused = run(["python", "-c", load], repo, check=False)
    assert refused.returncode != 0
    assert "stale weights" in refused.stderr
    run("dvc checkout -q", repo)
    scored, recorded = map(float, run(["python", "-c", load], repo).stdout.split())
    assert scored == pytest.approx(recorded, abs=1e-6)
    assert recorded == committed["test/error"]


def readme_commands(kinds=("bench ", "dvc metrics", "dvc exp show", "dvc plots")) -> list[str]:
    """The README's shell lines that start with one of `kinds`, continuation lines joined, comments dropped."""
    lines, blocks = [], re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command.startswith(kinds):
                lines.append(command)
    return lines


def prepared_clone(tmp_path) -> Path:
    """A fresh clone of this repository with the pipeline's own data, as `make run` prepares it."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)])
    run("dvc repro -q prepare", clone)
    return clone


@pytest.mark.integration
def test_the_committed_cells_are_those_of_the_committed_code_and_params(tmp_path):
    """dvc.lock pins each cell to the code, params and data that trained it: in a fresh clone no cell is out of
    date, so `make run` retrains nothing. A change to a train stage's code or params that was committed without
    retraining the grid fails here."""
    clone = prepared_clone(tmp_path)
    assert run("bench grid --dry-run", clone).stdout.strip().endswith("cells out of date: none")
    for stage, changes in json.loads(run("dvc status --json", clone).stdout).items():
        for change in changes:  # what a clone lacks: DVC's cache, and so the weights in the studies' folder `runs`
            assert isinstance(change, dict) and len(change) == 1, (stage, change)  # not "always changed"
            ((kind, paths),) = change.items()
            assert kind in ("changed outs", "changed deps"), (stage, change)
            if kind == "changed outs":
                assert set(paths.values()) == {"not in cache"}, (stage, change)
            else:
                assert paths == {"runs": "modified"}, (stage, change)


@pytest.mark.integration
def test_the_readme_s_examples_leave_the_pipeline_as_it_was(tmp_path):
    """Every `bench` example of the README (and its read-only dvc ones), run as written in a fresh clone, writes
    only to scratch places: git and DVC see the same workspace afterwards. PATH/images is a folder of images."""
    clone = prepared_clone(tmp_path)
    before = run("git status --porcelain", clone).stdout, run("dvc status --json", clone).stdout
    images = write_imagefolder(tmp_path / "images", classes=("cat", "dog"), per_class=(600, 20), size=(8, 8))
    commands = readme_commands()
    assert any(c.startswith("bench train") and "/tmp/x" in c for c in commands)  # the examples are found
    for command in commands:
        command = command.replace("/tmp/", f"{tmp_path}/tmp-").replace("PATH/images", str(images))
        assert run(command, clone, check=False).returncode == 0, command
    assert (run("git status --porcelain", clone).stdout, run("dvc status --json", clone).stdout) == before
