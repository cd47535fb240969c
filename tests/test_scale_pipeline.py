"""bench/scale/pipeline.py: the stages after the grid, the independent ones at once, recorded as `dvc repro` would."""

import json

import pytest
from helpers import run

from bench.scale import pipeline

STAGES = {
    "train": {"matrix": {"cell": ["a"]}, "cmd": "x", "outs": ["runs/${item.cell}.txt"]},
    "sweep": {"cmd": "s", "deps": ["data"], "outs": [{"sweep.json": {"cache": False}}]},
    "toy": {"cmd": "t", "outs": [{"report/toy": {"cache": False}}]},
    "landscape": {"cmd": "l", "deps": ["runs", "data"], "outs": [{"report/landscape": {"cache": False}}, "dirs"]},
    "report": {"cmd": "r", "deps": ["runs", "sweep.json", "report/toy", "report/landscape"], "outs": ["report/r.md"]},
}


def test_a_stage_downstream_of_one_to_run_runs_too_and_a_missing_cached_output_is_no_reason():
    status = {
        "toy": [{"changed outs": {"report/toy": "deleted"}}],  # git-held results deleted: run
        "landscape": [{"changed outs": {"dirs": "not in cache"}}],  # a clone without DVC's cache: keep
        "train@a": [{"changed deps": {"runs": "modified"}}],  # bench grid's, never this module's
    }
    recorded = {"sweep", "toy", "landscape", "report"}
    assert pipeline.plan(STAGES, status, [], recorded) == ["toy", "report"]
    assert pipeline.plan(STAGES, {}, ["sweep"], recorded) == ["sweep", "report"]
    assert pipeline.plan(STAGES, {}, [], recorded) == []
    assert pipeline.plan(STAGES, {}, [], recorded - {"landscape"}) == ["landscape", "report"]  # never ran


def test_the_report_waits_for_the_stages_whose_outputs_it_reads_and_the_others_wait_for_none():
    todo = ["sweep", "toy", "landscape", "report"]
    assert pipeline.waits(STAGES, todo) == {
        "sweep": set(),
        "toy": set(),
        "landscape": set(),
        "report": {"sweep", "toy", "landscape"},
    }


def write_repo(tmp_path, fail_b: bool = False):
    """A DVC repo of stages `a` and `b` that write when they start and end, a second apart, and `c` that reads both
    (and fails where its output stale.txt, an earlier run's, was not removed before it ran)."""
    run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path)
    (tmp_path / "stale.txt").write_text("an earlier run's\n")
    b = "exit 3" if fail_b else "date +%s.%N > b.txt; sleep 1; date +%s.%N >> b.txt"
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: date +%s.%N > a.txt; sleep 1; date +%s.%N >> a.txt\n    outs:\n      - a.txt\n"
        f"  b:\n    cmd: {b}\n    outs:\n      - b.txt:\n          cache: false\n"
        "  c:\n    cmd: test ! -e stale.txt && cat a.txt b.txt > c.txt && echo fresh > stale.txt\n"
        "    deps:\n      - a.txt\n      - b.txt\n"
        "    outs:\n      - c.txt\n      - stale.txt\n"
    )


def test_independent_stages_run_at_once_and_dvc_finds_them_all_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_repo(tmp_path)
    assert pipeline.main(jobs=2) == 0
    (a0, a1), (b0, b1) = ([float(t) for t in (tmp_path / f"{n}.txt").read_text().split()] for n in "ab")
    assert b0 < a1 and a0 < b1  # a and b ran side by side
    assert (tmp_path / "c.txt").read_text() == (tmp_path / "a.txt").read_text() + (tmp_path / "b.txt").read_text()
    assert (tmp_path / "stale.txt").read_text() == "fresh\n"  # removed before c ran, as DVC removes outputs
    assert "recorded a, b, c in dvc.lock" in capsys.readouterr().out
    assert json.loads(run(["dvc", "status", "--json"], cwd=tmp_path).stdout) == {}  # as `dvc repro` would leave it
    assert pipeline.main(jobs=2) == 0  # nothing left to run
    assert "stages to run" not in capsys.readouterr().out


def test_a_failed_stage_stops_its_downstream_and_the_others_are_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_repo(tmp_path, fail_b=True)
    assert pipeline.main(jobs=2) == 1
    out = capsys.readouterr().out
    assert "b FAILED (exit 3; log: logs/stages/b.log)" in out
    assert "failed: b; not run: c" in out
    status = json.loads(run(["dvc", "status", "--json"], cwd=tmp_path).stdout)
    assert sorted(status) == ["b", "c"]  # a recorded
    assert not (tmp_path / "c.txt").exists()


def test_a_command_dvc_would_interpolate_is_refused_before_any_stage_runs_and_a_list_runs_in_order():
    with pytest.raises(ValueError, match=r"stage toy's command uses dvc.yaml's \$\{...\} interpolation"):
        pipeline.command("toy", {"cmd": "bench toy --depth ${toy.depth}"})
    assert pipeline.command("two", {"cmd": ["echo a", "echo b"]}) == "echo a && echo b"


def test_a_clone_without_the_cells_weights_keeps_the_studies_results_git_holds(tmp_path, monkeypatch):
    """Where the cells lack only their weights (DVC's cache) and runs/ is as committed, `runs` reads as modified to
    `dvc status`, yet the studies' committed results are those of these cells: not rerun. Anything else is."""
    status = {"landscape": [{"changed deps": {"runs": "modified"}}], "report": [{"changed deps": {"runs": "modified"}}]}
    recorded = {"sweep", "toy", "landscape", "report"}
    assert pipeline.plan(STAGES, status, [], recorded, weights_missing=True) == []
    assert pipeline.plan(STAGES, status, [], recorded) == ["landscape", "report"]
    also_data = {"landscape": [{"changed deps": {"runs": "modified", "data": "modified"}}]}
    assert pipeline.plan(STAGES, also_data, [], recorded, weights_missing=True) == ["landscape", "report"]

    monkeypatch.chdir(tmp_path)
    run(["git", "init", "-q"], cwd=tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs/a.json").write_text("{}")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    run(["git", "add", "."], cwd=tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], cwd=tmp_path)
    weights_only = {"train@a": [{"changed outs": {"runs/a/weights.safetensors": "not in cache"}}]}
    assert pipeline.committed_but_weights(weights_only)
    assert not pipeline.committed_but_weights({**weights_only, "train@b": [{"changed deps": {"data": "modified"}}]})
    assert not pipeline.committed_but_weights({})  # the weights are here: nothing to keep
    (tmp_path / "runs/a.json").write_text('{"edited": 1}')
    assert not pipeline.committed_but_weights(weights_only)  # runs/ is not what git holds
