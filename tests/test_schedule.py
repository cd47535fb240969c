import pytest
from helpers import PARAMS

from bench import config
from bench.train.schedule import lr_factor


def cfg(*overrides):
    return config.load(PARAMS, list(overrides)).train


def test_he_et_al_multistep():
    t = cfg("train.lr=0.1", "train.milestones=[32000, 48000]", "train.max_steps=64000", "train.warmup_steps=0")
    assert [lr_factor(s, t, 56) for s in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_linear_warmup():
    t = cfg("train.warmup_steps=4", "train.milestones=[100]")
    assert [lr_factor(s, t, 20) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])


def test_constant_low_lr_warmup_only_for_deep_nets():
    t = cfg(
        "train.lr=0.1",
        "train.low_lr=0.01",
        "train.low_lr_steps=400",
        "train.low_lr_min_depth=110",
        "train.milestones=[32000]",
    )
    assert lr_factor(0, t, 110) * t.lr == pytest.approx(0.01)
    assert lr_factor(399, t, 110) * t.lr == pytest.approx(0.01)
    assert lr_factor(400, t, 110) == 1
    assert lr_factor(0, t, 56) == 1
