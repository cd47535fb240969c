"""What a result says about where it came from: the CPU type that decides its bits, and params that are not git's."""

import json
import subprocess

from bench import provenance


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_a_cell_retrained_on_another_cpu_type_says_so(tmp_path):
    here = provenance.cpu_type()
    (tmp_path / "env.json").write_text(json.dumps({"hardware": here}))
    assert provenance.other_cpu_note(tmp_path, "plain-8-0") is None  # the same type: no line
    other = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_capability": "AVX512"}
    (tmp_path / "env.json").write_text(json.dumps({"hardware": other}))
    note = provenance.other_cpu_note(tmp_path, "plain-8-0")
    assert note.startswith("plain-8-0: the result this replaces came from Intel(R) Xeon(R) Platinum 8480+ (AVX512)")
    assert f"this is {here['cpu']} ({here['cpu_capability']})" in note


def test_params_that_differ_from_git_s_are_named_with_both_values(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 0.05\n  max_steps: 200\ngrid:\n  depths: [8, 20]\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params", "--allow-empty")
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params")
    monkeypatch.chdir(tmp_path)
    assert provenance.params_note(params) is None  # as committed
    params.write_text("train:\n  lr: 0.1\n  max_steps: 200\ngrid:\n  depths: [8]\n")  # `dvc exp run -S` leftovers
    assert provenance.params_changes(params) == ["grid.depths: [8, 20] -> [8]", "train.lr: 0.05 -> 0.1"]
    assert (
        provenance.params_note(params)
        == f"{params} differs from git HEAD's: grid.depths: [8, 20] -> [8]; train.lr: 0.05 -> 0.1"
    )
    assert provenance.params_changes(tmp_path / "elsewhere.yaml") == []  # git holds no copy of it
