"""The probe and what is measured on it: class-stratified images, the backward signal per block, shattering
between distinct inputs, every 3x3 layer's response, lesions beside the intact error."""

import math

import pytest
import torch
from torch import nn

from bench.diagnostics import probe, shattering
from bench.diagnostics import signals as D
from bench.models import build_model


class Linear(nn.Module):
    """A linear 'network' with the blocks interface: d logit / d input is W[target] at every input."""

    def __init__(self, d_in: int, classes: int):
        super().__init__()
        self.blocks = nn.Sequential(nn.Flatten(), nn.Linear(d_in, classes))

    def forward(self, x):
        return self.blocks(x)


# --- the probe ---


def test_probe_is_stratified_by_class_alternates_classes_and_depends_on_the_seed_only():
    labels = torch.arange(10).repeat_interleave(36)  # sorted by class, as an ImageFolder test split is
    picked = probe.indices(labels, 256, seed=0)
    counts = torch.bincount(labels[picked], minlength=10)
    assert len(set(picked)) == 256 and counts.max() - counts.min() <= 1  # 25 or 26 of each class
    assert all(labels[a] != labels[b] for a, b in zip(picked[::2], picked[1::2]))  # every pair: two classes
    assert picked == probe.indices(labels, 256, seed=0) != probe.indices(labels, 256, seed=1)
    assert picked[:10] != list(range(0, 360, 36))  # shuffled within each class, not the first of each
    uneven = torch.tensor([0] * 3 + [1] * 50)  # a class runs out: the rest come from the others
    assert sorted(probe.indices(uneven, 20, seed=0)) == sorted(set(probe.indices(uneven, 20, seed=0)))
    assert torch.bincount(uneven[probe.indices(uneven, 20, seed=0)]).tolist() == [3, 17]


# --- the backward signal ---


def test_ratio_is_nan_never_inf_for_a_zero_or_non_finite_denominator():
    assert D.ratio(2.0, 4.0) == 0.5
    for num, den in [(0.0, 0.0), (1.0, 0.0), (math.inf, 1.0), (1.0, math.nan)]:
        assert math.isnan(D.ratio(num, den))


def test_backward_signal_is_the_rms_per_element_of_the_activation_gradient():
    torch.manual_seed(0)
    model = build_model("residual_bn", 14, in_channels=1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    out = D.block_gradients(model, x, y)
    outputs = []
    hooks = [b.register_forward_hook(lambda m, a, o: outputs.append(o)) for b in model.blocks]
    loss = nn.functional.cross_entropy(model.train()(x), y)
    grads = torch.autograd.grad(loss, outputs)
    for h in hooks:
        h.remove()
    expected = [math.sqrt((g.double() ** 2).sum().item() / g.numel()) for g in grads]
    assert out["activation_rms"] == pytest.approx(expected, rel=1e-5)
    assert out["ratio"] == pytest.approx(expected[0] / expected[-1], rel=1e-5) and not out["saturated"]
    w = list(model.blocks[0].parameters())
    assert out["relative_weight"][0] > 0 and len(out["relative_weight"]) == len(model.blocks) == 6
    assert all(p.grad is None for p in w)


def test_a_loss_saturated_at_zero_gives_nan_and_the_saturated_flag_not_inf():
    torch.manual_seed(0)
    model = build_model("residual", 14, in_channels=1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1e4] + [0.0] * 9))  # class 0 by a margin of 1e4: loss exactly 0
    x, y = torch.randn(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)
    out = D.block_gradients(model, x, y)
    assert math.isnan(out["ratio"]) and out["saturated"]
    record = probe.measure(model, x, y, num_classes=10, pairs=2, points=8)
    assert record["grad_ratio"] is None and record["grad_saturated"] is True  # JSON: null, never inf


# --- shattering ---


def test_a_linear_net_has_gradient_correlation_exactly_one_between_distinct_inputs():
    torch.manual_seed(0)
    model = Linear(3 * 8 * 8, 10)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    out = shattering.shattering(model, x, y, pairs=8, points=16)
    assert out["correlation"] == pytest.approx(1.0) and out["correlation_std"] == pytest.approx(0.0, abs=1e-12)
    assert out["lag1"] == pytest.approx(1.0) and out["by_distance"] == pytest.approx([1.0] * 16)
    assert len(out["correlation_pairs"]) == 8


def test_white_noise_gradients_are_uncorrelated_and_a_zero_gradient_has_no_direction():
    torch.manual_seed(0)
    c = shattering.gradient_correlations(torch.randn(64, 20000))
    assert c.diagonal() == pytest.approx(torch.ones(64, dtype=torch.float64))
    assert abs(shattering.mean_off_diagonal(c)) < 0.01
    assert math.isnan(shattering.mean_off_diagonal(shattering.gradient_correlations(torch.zeros(4, 3))))


def test_plain_nets_gradients_decorrelate_with_depth_more_than_residual_nets_at_init():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    score = {}
    for variant in ("plain_bn", "residual_bn"):
        for depth in (8, 56):
            torch.manual_seed(1)
            model = D.calibrate_bn(build_model(variant, depth, in_channels=1), x)
            score[variant, depth] = shattering.shattering(model, x, y, pairs=4, points=64)["lag1"]
    # 64 points per path: with 16, neighbouring points are too far apart for the residual net's gradients to
    # stay correlated at depth 56, and the two nets' values differ by less than their spread over pairs
    assert score["plain_bn", 56] < score["plain_bn", 8] - 0.5
    assert score["plain_bn", 56] < score["residual_bn", 56] - 0.2


# --- responses and lesions ---


def test_response_std_is_read_at_every_3x3_layer_stem_included():
    model = build_model("plain_bn", 20, in_channels=1)
    layers = D.layers_3x3(model)
    assert (
        len(layers) == 1 + 2 * 9 == sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    )
    assert len(D.response_stds(model.eval(), torch.randn(8, 1, 8, 8))) == 19


def test_bn_scale_change_is_the_mean_distance_of_gamma_from_one():
    model = build_model("residual_bn", 8, in_channels=1)
    assert D.bn_scale_change(model) == 0 and D.bn_scale_change(build_model("residual", 8, in_channels=1)) is None
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.5)
    assert D.bn_scale_change(model) == pytest.approx(0.5)


def test_lesions_report_downsampling_blocks_apart_and_flag_a_net_at_chance():
    torch.manual_seed(0)
    model = build_model("residual", 14, in_channels=1).eval()
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # the intact net is right on every image: error 0
    out = D.lesion_errors(model, x, y, chance=0.9)
    assert out["intact"] == 0 and not out["at_chance"]
    assert out["downsampling"] == [False, False, True, False, True, False]
    increases = [e for e, down in zip(out["per_block"], out["downsampling"]) if not down]
    assert out["mean_increase"] == pytest.approx(sum(increases) / 4)
    assert out["downsampling_mean_increase"] == pytest.approx((out["per_block"][2] + out["per_block"][4]) / 2)
    wrong = (y + 1) % 10  # every label wrong: error 1, at or above chance
    assert D.lesion_errors(model, x, wrong, chance=0.9)["at_chance"]
