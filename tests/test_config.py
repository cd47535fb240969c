import os
import re
import subprocess
import sys
import time
import typing
from dataclasses import fields

import pytest
import yaml
from helpers import PARAMS, ROOT

from bench import config, validate


def test_default_params_load_typed():
    p = config.load(PARAMS)
    assert isinstance(p.train.lr, float)
    assert isinstance(p.train.max_steps, int)
    assert 56 in p.grid.depths
    assert p.grid.variants == ["plain", "plain_bn", "residual", "residual_bn", "residual_fixup"]
    assert len(p.grid.seeds) == 3  # each 3 of 5 seeds gave all 17 verdicts of the 5 (docs/claims.md)
    assert p.trainer.deterministic  # repeatable ...
    assert p.speed.threads == 1  # ... bit for bit


def test_he_preset_trains_on_all_50k_with_option_a():
    he = config.load(PARAMS, config.preset(PARAMS.parent / "presets" / "he2016.yaml"))
    assert he.data.val_size == 0
    assert he.model.shortcut == "zero_pad"
    assert he.train.max_steps == 64000
    assert he.trainer.benchmark
    assert not he.trainer.deterministic  # cuDNN autotuned: the fast kernels, not repeatable


def test_shattering_pairs_must_fit_in_the_probe():
    with pytest.raises(ValueError, match="diagnostics.pairs=200 needs 400 probe images"):
        config.load(PARAMS, ["diagnostics.pairs=200"])


def test_overrides_are_parsed_as_yaml():
    p = config.load(PARAMS, ["train.lr=0.05", "train.milestones=[10, 20]", "train.low_lr=null", "train.augment=false"])
    assert p.train.lr == 0.05
    assert p.train.milestones == [10, 20]
    assert p.train.low_lr is None
    assert p.train.augment is False


def test_int_is_accepted_for_float():
    assert config.load(PARAMS, ["train.lr=1"]).train.lr == 1.0


def write(tmp_path, mutate):
    raw = yaml.safe_load(PARAMS.read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda r: r["train"].update(lrr=0.1), "unknown key train.lrr"),
        (lambda r: r.update(extra={}), "unknown key extra"),
        (lambda r: r["train"].pop("lr"), "missing key train.lr"),
        (lambda r: r["train"].update(max_steps="many"), "train.max_steps: expected int"),
        (lambda r: r["train"].update(max_steps=True), "train.max_steps: expected int"),
        (lambda r: r["grid"].update(depths=[8, "x"]), r"grid.depths\[1\]: expected int"),
        (lambda r: r.update(train=[1, 2]), "train: expected a mapping"),
    ],
)
def test_bad_params_name_the_key(tmp_path, mutate, message):
    with pytest.raises(ValueError, match=message):
        config.load(write(tmp_path, mutate))


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lrr=1", "unknown key train.lrr"),
        ("nosection.lr=1", "unknown key nosection"),
        ("train.lr", "not section.key=value"),
        ("train.lr=fast", "train.lr: expected float"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        config.load(PARAMS, [override])


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [lr: 0.1\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        config.load(bad)
    with pytest.raises(ValueError, match="not found"):
        config.load(tmp_path / "nope.yaml")


def test_text_overrides_stay_text():
    p = config.load(PARAMS, ["data.md5=00000000000000000000000000000123", "data.source=null", "data.name=cifar10"])
    assert p.data.md5 == "00000000000000000000000000000123"
    assert p.data.source is None


def test_the_he_preset_applies_to_params_as_overrides(cli):
    from helpers import ROOT

    preset = config.preset(ROOT / "presets/he2016.yaml")
    p = config.load(PARAMS, preset)
    assert (p.train.max_steps, p.train.milestones, p.train.lr, p.train.weight_decay) == (
        64000,
        [32000, 48000],
        0.1,
        1e-4,
    )
    assert p.model.shortcut == "zero_pad"
    assert p.data.md5 is None
    assert p.grid.depths == [8, 14, 20, 32, 44, 56, 110]
    assert all(" " not in o for o in preset)  # one shell word each, as `make he2016` passes them
    code, out, _ = cli("preset", ROOT / "presets/he2016.yaml", "--dvc", "--params", PARAMS)
    assert code == 0
    assert out.split() == [w for o in preset for w in ("-S", o)]


def test_a_preset_that_does_not_apply_is_refused(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    code, out, err = cli("preset", bad, "--params", PARAMS)
    assert code == 2
    assert "unknown key train.lrr" in err
    assert out == ""


@pytest.mark.parametrize(
    "text,value",
    [
        ("1e-3", 1e-3),
        ("1E-4", 1e-4),
        (".5", 0.5),
        ("5.", 5.0),
        ("2e+2", 200.0),
        ("1.5e-3", 1.5e-3),
        ("0.05", 0.05),
        ("3", 3.0),
    ],
)
def test_every_float_a_person_writes_is_a_float_in_overrides_and_in_params_yaml(tmp_path, text, value):
    """YAML 1.1 reads 1e-3 as a string; params.yaml and `key=value` overrides read it as the float it is."""
    assert config.load(PARAMS, [f"train.lr={text}"]).train.lr == value
    written = tmp_path / "params.yaml"
    written.write_text(PARAMS.read_text().replace("weight_decay: 0.0001", f"weight_decay: {text}"))
    assert config.load(written).train.weight_decay == value


def alias_bomb(levels: int = 9) -> str:
    """'Billion laughs' as a YAML flow list: each anchor nine aliases of the one before, 9**9 strings in ~320 bytes."""
    names = "abcdefghi"[:levels]
    items = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    items += [f"&{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:])]
    return f"[{', '.join(items)}]"


BOMB_CHILD = """import resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (2_000_000_000, 2_000_000_000))  # a regression fails here, not the machine
r = subprocess.run([sys.executable, "-m", "bench", *sys.argv[1:]], capture_output=True, text=True, timeout=60)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.stderr.strip()[-300:], sep="\\n")"""


@pytest.mark.parametrize("form", ["params file", "preset", "override"])
def test_an_alias_bomb_exits_2_in_little_memory(tmp_path, form):
    """Expanded, the bomb is a billion strings (the error message that printed it ran out of memory after ~40 s);
    refused at its first anchor, it costs what any bad input costs. A grandchild, so ru_maxrss is its own."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb() + "\n")
    args = {
        "params file": ["train", "--variant", "plain", "--depth", "8", "--out", tmp_path / "out", "--params", bomb],
        "preset": ["preset", bomb, "--params", PARAMS],
        "override": ["train", "--variant", "plain", "--depth", "8", "--out", tmp_path / "out", "--params", PARAMS]
        + [f"train.lr={alias_bomb()}"],
    }[form]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, *map(str, args)], capture_output=True, text=True, timeout=90, env=env
    )
    code, peak_kb, err = child.stdout.split("\n", 2)
    assert code == "2", (child.stdout, child.stderr)
    assert "anchors and aliases (&name, *name) are not supported" in err, err
    assert int(peak_kb) < 500_000  # KB: the interpreter and bench's imports, about 40 MB
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text,message",
    [
        ("train: &t {lr: 0.1}\n", "anchors and aliases (&name, *name) are not supported in params files at line 1"),
        ("train:\n  lr: 0.1\n  <<: {momentum: 0.5}\n", "merge keys (<<) are not supported in params files at line 3"),
    ],
)
def test_anchors_aliases_and_merge_keys_are_refused_as_such(tmp_path, text, message):
    """Valid YAML, so not "not valid YAML": what is refused, and where. params.yaml and the presets use none."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        config.load(path)
    with pytest.raises(ValueError, match=re.escape("train.milestones={<<: [1]}': merge keys (<<) are not supported")):
        config.load(PARAMS, ["train.milestones={<<: [1]}"])
    for preset in sorted((ROOT / "presets").glob("*.yaml")):  # read by the loader that refuses them
        config.load(PARAMS, config.preset(preset))


@pytest.mark.parametrize(
    "override", ["train.lr=[" + ",".join(["1"] * 1_000) + "]", "grid.depths=[" + "8," * 1_000 + "8]"]
)
def test_an_error_shows_a_long_value_cut(override):
    with pytest.raises(ValueError) as e:
        config.load(PARAMS, [override])
    assert len(str(e.value)) < 400, str(e.value)[:1000]


def test_a_null_section_is_named_once(tmp_path):
    """`train: null` with an override of train.lr said "unknown key train ...; valid sections: grid, data, train"."""
    path = write(tmp_path, lambda r: r.update(train=None))
    for overrides in ([], ["train.lr=0.1"]):
        with pytest.raises(ValueError, match=r"^train: expected a mapping of keys, got None$"):
            config.load(path, overrides)
    with pytest.raises(ValueError, match="a whole section is not overridden"):
        config.load(PARAMS, ["train=null"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("grid.seeds=[0,0,0]", "grid.seeds=[0, 0, 0] holds 0 twice"),
        ("grid.depths=[8,20,8]", "grid.depths=[8, 20, 8] holds 8 twice"),
        ("grid.variants=[plain,residual,plain]", "holds 'plain' twice"),
        ("lr_sweep.lrs=[0.1,0.1]", "lr_sweep.lrs=[0.1, 0.1] holds 0.1 twice"),
        ("toy.depths=[1,2,2]", "toy.depths=[1, 2, 2] holds 2 twice"),
    ],
)
def test_a_value_repeated_in_a_grid_is_refused(override, message):
    """Three runs of seed 0 are one run counted three times: n=3 and a spread of 0."""
    with pytest.raises(ValueError, match=re.escape(message)):
        config.load(PARAMS, [override])


def test_every_number_has_an_upper_bound():
    """A number without one reached the allocator (diagnostics.points=1e8) or crashed torch (speed.threads=1e5)."""
    numbers = (int, float, int | None, float | None, list[int], list[float])
    missing = []
    for section, cls in typing.get_type_hints(config.Params).items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            r = f.metadata.get("range")
            if hints[f.name] in numbers and (r is None or (r.at_most is None and r.below is None)):
                missing.append(f"{section}.{f.name}")
    assert not missing
    with pytest.raises(ValueError, match=r"speed.threads=100000 must be at least 1 and at most 1024"):
        config.load(PARAMS, ["speed.threads=100000"])


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="train.nesterov=true with train.momentum=0"):
        config.load(PARAMS, ["train.nesterov=true", "train.momentum=0"])
    assert config.load(PARAMS, ["train.nesterov=true"]).train.nesterov


def test_more_than_one_node_needs_a_cluster_job(monkeypatch):
    """Outside one, Lightning waits for the other nodes forever; `bench slurm` still writes their job."""
    for name in validate.CLUSTER:
        monkeypatch.delenv(name, raising=False)
    two = config.load(PARAMS, ["trainer.num_nodes=2"])
    with pytest.raises(ValueError, match="trainer.num_nodes=2 outside a cluster job"):
        validate.nodes(two.trainer, env={})
    validate.nodes(two.trainer, env={"SLURM_JOB_ID": "4242"})
    validate.nodes(two.trainer, env={"TORCHELASTIC_RUN_ID": "x"})
    validate.nodes(config.load(PARAMS).trainer, env={})
    with pytest.raises(ValueError, match="trainer.num_nodes=2 outside"):
        validate.run(two, check_nodes=True)
    validate.run(two, check_speed=True)  # only a command that trains on this machine asks


@pytest.mark.parametrize("precision", validate.PRECISIONS)
def test_the_accepted_trainer_flags_pass(precision):
    for accelerator, strategy in zip(validate.ACCELERATORS, [*validate.STRATEGIES, "auto", "auto"]):
        flags = [f"trainer.precision={precision}", f"trainer.accelerator={accelerator}", f"trainer.strategy={strategy}"]
        validate.run(config.load(PARAMS, flags), check_speed=True)
