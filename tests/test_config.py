import pytest
import yaml
from helpers import PARAMS

from bench import config


def test_default_params_load_typed():
    p = config.load(PARAMS)
    assert isinstance(p.train.lr, float)
    assert isinstance(p.train.max_steps, int)
    assert 56 in p.grid.depths
    assert p.grid.variants == ["plain", "plain_bn", "residual", "residual_bn", "residual_fixup"]
    assert len(p.grid.seeds) == 3  # mean ± std
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
