"""The `bench` command has no surprises: its version, its help when run alone, a help text for every option,
override examples a command really reads, --params only where another file is read, `bench grid --dry-run`, the
grid's default jobs, and shell completion."""

import argparse
import importlib.metadata
import json
import re
import shutil
import subprocess

import pytest
import yaml
from helpers import PARAMS, ROOT, set_params

from bench import arguments, config
from bench.record import Cell, cells
from bench.scale import launcher

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# the params of the commands that take overrides but are no DVC stage (the stages' are their dvc.yaml params)
NOT_STAGES = {
    "perf": ["data", "model", "train", "trainer", "speed"],  # the train step, timed
    "wandb": ["wandb", "grid", "data", "model", "train"],  # the runs' folder and group; the Report's grid
}
# section.key=value in a help text; "section.key" is the placeholder, not an example
EXAMPLE = re.compile(r"(?<![\w.-])([a-z_]+)\.([a-z_]+)=(\S+)")


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub


def commands() -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name, as bench.cli builds them."""
    return dict(subparsers(arguments.parser()).choices)


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def takes_overrides(parser: argparse.ArgumentParser) -> bool:
    return any(a.dest == "overrides" for a in parser._actions)


def reads(command: str) -> list[str]:
    """The params `bench COMMAND` is documented to read: its dvc.yaml stage's, else NOT_STAGES'."""
    stage = command.replace("-", "_")
    return STAGES[stage]["params"] if stage in STAGES else NOT_STAGES[command]


def test_version_prints_bench_and_the_installed_version(cli):
    code, out, err = cli("--version")
    assert code == 0, err
    assert out == f"bench {importlib.metadata.version('bench')}\n"


def test_every_command_runs_from_a_source_checkout_that_is_not_installed(cli, monkeypatch):
    """A machine's own Python with the checkout on PYTHONPATH (a GPU machine's) has no `bench` distribution."""

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    code, out, err = cli("--version")
    assert code == 0, err
    assert out == "bench (not installed: run from a source checkout)\n"


def test_bench_alone_prints_the_help_and_exits_0(cli):
    code, out, err = cli()
    assert code == 0, err
    assert err == ""
    assert out == arguments.parser().format_help()
    assert out.startswith("usage: bench")
    assert "train one cell" in out
    assert "grid" in out


def test_every_option_of_every_command_has_a_help_text():
    top = arguments.parser()
    sub = subparsers(top)
    checked, missing = set(), []
    for name, parser in {"bench": top, **{f"bench {n}": p for n, p in sub.choices.items()}}.items():
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            label = f"{name} {'/'.join(a.option_strings) or a.dest}"
            checked.add(label)
            if not (a.help or "").strip() or a.help == argparse.SUPPRESS:
                missing.append(label)
    missing += [f"bench {c.dest} (the command)" for c in sub._choices_actions if not (c.help or "").strip()]
    assert {"bench train --seed", "bench slurm --partition", "bench slurm --cpus-per-gpu"} <= checked  # the walk
    assert not missing


def test_override_examples_name_only_keys_their_command_reads(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one help line per option: no example split across lines
    seen = {}
    for name, parser in commands().items():
        code, out, err = cli(name, "--help")
        assert code == 0, err
        examples = [f"{s}.{k}={v}" for s, k, v in EXAMPLE.findall(out) if (s, k) != ("section", "key")]
        if not takes_overrides(parser):
            assert not examples, f"bench {name} takes no overrides, yet its help shows {examples}"
            continue
        for example in examples:
            key = example.split("=")[0]
            assert any(key == r or key.startswith(r + ".") for r in reads(name)), f"bench {name} reads no {key}"
        config.load(PARAMS, examples)  # real keys, values of their types
        seen[name] = examples
    assert seen["prepare"] == ["data.val_size=5000"]  # the rule was applied to the commands that take overrides
    assert seen["train"] == ["train.lr=0.05", "trainer.devices=2"]
    assert "trainer.devices=2" not in seen["toy"] + seen["report"] + seen["lr-sweep"]


def test_params_is_offered_only_by_commands_that_read_another_params_file(cli):
    offered = {name for name, p in commands().items() if any("--params" in a.option_strings for a in p._actions)}
    # grid and slurm run dvc.yaml's stages, which read params.yaml; completion reads no params
    assert offered == set(commands()) - {"grid", "slurm", "completion"}
    for command in ("grid", "slurm"):
        assert "--params" not in cli(command, "--help")[1]
        for argv in (["--params", "other.yaml"], ["--params=other.yaml"]):  # still refused, and why
            code, _, err = cli(command, *argv)
            assert code == 2
            assert f"bench {command}: error: it runs dvc.yaml's train stage, which reads params.yaml" in err


def test_grid_runs_as_many_jobs_as_make_run_by_default():
    jobs = int(re.search(r"^JOBS \?= (\d+)$", (ROOT / "Makefile").read_text(), re.M).group(1))
    action = option(commands()["grid"], "--jobs")
    assert action.default == jobs == 2
    assert f"(default: {jobs}, as `make run`)" in action.help


@pytest.mark.parametrize(
    "prepare, note", [({}, []), ({"prepare": [{"changed deps": {}}]}, ["and prepare is out of date"])]
)  # `dvc status prepare --json`: up to date, out of date
def test_grid_dry_run_lists_the_launchers_out_of_date_cells_and_trains_nothing(
    cli, tmp_path, monkeypatch, prepare, note
):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    calls, status = [], subprocess.CompletedProcess([], 0, json.dumps(prepare), "")
    monkeypatch.setattr(launcher, "stale_cells", lambda p: [Cell("plain", 8, 1), Cell("residual_bn", 56, 0)])
    monkeypatch.setattr(launcher, "dvc", lambda *a, **k: calls.append(a) or status)
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: pytest.fail("bench grid --dry-run trained"))
    code, out, err = cli("grid", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"2 of {len(cells(config.load(PARAMS)))} cells out of date: plain-8-1 residual_bn-56-0"
    assert [line.split(":")[0] for line in lines[1:]] == note
    assert calls == [("status", "prepare", "--json")]  # no dvc repro, no dvc commit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no logs, no runs


@pytest.mark.integration
def test_grid_dry_run_in_a_dvc_repo_names_what_grid_would_train(repo, cli, monkeypatch):
    set_params(
        repo,
        grid={"variants": ["plain"], "depths": [8], "seeds": [0, 1]},
        wandb={"mode": "disabled"},
        trainer={"accelerator": "cpu"},
    )
    monkeypatch.chdir(repo)
    code, out, err = cli("grid", "--dry-run")
    assert code == 0, err
    stale = launcher.stale_cells(config.load(repo / "params.yaml"))
    assert [c.name for c in stale] == ["plain-8-0", "plain-8-1"]  # a fresh repo: every cell
    assert out.splitlines()[0] == "2 of 2 cells out of date: plain-8-0 plain-8-1"
    assert "and prepare is out of date" in out
    assert not [p for p in ("runs", "data/prepared", "logs", "dvc.lock") if (repo / p).exists()]


def test_completion_prints_a_bash_script_that_names_the_commands(cli):
    code, out, err = cli("completion", "bash")
    assert code == 0, err
    assert out.strip()
    assert re.search(r"\btrain\b", out)
    assert re.search(r"\bgrid\b", out)
    code, zsh, err = cli("completion", "zsh")
    assert code == 0, err
    assert zsh.startswith("#compdef bench")


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash")
def test_the_bash_completion_completes_commands_and_their_options(cli, tmp_path):
    script = tmp_path / "bench.bash"
    script.write_text(cli("completion")[1])  # bash, by default

    def complete(*words: str) -> list[str]:
        line = f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; _shtab_bench"
        r = subprocess.run(["bash", "-c", line + '; printf "%s\\n" "${COMPREPLY[@]}"'], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("bench", "gr") == ["grid"]
    assert complete("bench", "tr") == ["train"]
    assert complete("bench", "grid", "--d") == ["--dry-run"]
