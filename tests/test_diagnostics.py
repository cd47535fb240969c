"""The measures of bench.diagnostics, one section per module (one paper each), then the probe that runs them all."""

import functools
import math

import pytest
import torch
from torch import nn

from bench.diagnostics import batchnorm, lesions, probe, propagation, shattering, signals
from bench.models import build_model


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def zero_branches(model):
    """Every block's branch f outputs exactly 0: conv2 (and its bias) zeroed, and BN's gamma where BN ends f."""
    with torch.no_grad():
        for b in model.blocks:
            b.conv2.weight.zero_()
            if b.conv2.bias is not None:
                b.conv2.bias.zero_()
            if b.branch_end is b.bn2 and isinstance(b.bn2, nn.BatchNorm2d):
                b.bn2.weight.zero_()
    return model


class Linear(nn.Module):
    """A linear 'network' with the blocks interface: d logit / d input is W[target] at every input."""

    def __init__(self, d_in: int, classes: int):
        super().__init__()
        self.blocks = nn.Sequential(nn.Flatten(), nn.Linear(d_in, classes))

    def forward(self, x):
        return self.blocks(x)


class Stack(nn.Module):
    """x_{l+1} = x_l + W2 relu(W1 x_l), fully connected, He init, no BN."""

    def __init__(self, width, depth):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.w1, self.w2 = nn.Linear(width, width, bias=False), nn.Linear(width, width, bias=False)
        for w in (self.w1, self.w2):
            nn.init.kaiming_normal_(w.weight, nonlinearity="relu")  # variance 2 / fan_in

    def forward(self, x):
        return x + self.w2(torch.relu(self.w1(x)))


# --- signals: vanishing and exploding (He et al. 2016, Fig. 7) ---


def test_ratio_is_nan_never_inf_for_a_zero_or_non_finite_denominator():
    assert signals.ratio(2.0, 4.0) == 0.5
    for num, den in [(0.0, 0.0), (1.0, 0.0), (math.inf, 1.0), (1.0, math.nan)]:
        assert math.isnan(signals.ratio(num, den))


def test_zeroed_branch_passes_the_gradient_through_unchanged():
    torch.manual_seed(0)
    block = zero_branches(build_model("residual", 8)).blocks[0]  # identity shortcut, 16 -> 16 channels
    x = torch.relu(torch.randn(2, 16, 8, 8)).requires_grad_()  # a block's input is post-ReLU
    out = block(x)
    v = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, v)
    assert torch.equal(out, x)
    assert torch.equal(g, v * (x > 0))  # the Jacobian is the identity on active units


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_the_backward_gain_of_a_net_with_no_depth_effect_is_exactly_one(depth):
    """A Fixup net at initialisation: every block is the identity (its last conv is 0), so the gradient passes each
    block unchanged on the units that are on. A first/last-block RMS ratio reads about 0.4 for it."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    assert signals.block_gradients(build_model("residual_fixup", depth, in_channels=1), x, y)["ratio"] == pytest.approx(
        1.0, abs=1e-12
    )


def test_the_backward_gain_vanishes_with_depth_in_plain_nets_and_explodes_with_bn_at_init():
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    gain = {
        (v, d): signals.block_gradients(build_model(v, d, in_channels=1), x, y)["ratio"]
        for v in ("plain", "plain_bn")
        for d in (8, 20)
    }
    assert gain["plain", 20] < gain["plain", 8] < 1  # vanishing: He init ignores the zero-padded border taps
    assert gain["plain_bn", 20] > gain["plain_bn", 8] > 1  # BN at init: exploding (Yang et al. 2019)


def test_backward_signal_is_the_rms_per_element_of_the_activation_gradient():
    torch.manual_seed(0)
    model = build_model("residual_bn", 14, in_channels=1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    out = signals.block_gradients(model, x, y)
    outputs = []
    hooks = [b.register_forward_hook(lambda m, a, o: outputs.append(o)) for b in model.blocks]
    loss = nn.functional.cross_entropy(model.train()(x), y)
    grads = torch.autograd.grad(loss, outputs)
    for h in hooks:
        h.remove()
    expected = [math.sqrt((g.double() ** 2).sum().item() / g.numel()) for g in grads]
    assert out["activation_rms"] == pytest.approx(expected, rel=1e-5)
    assert not out["saturated"]
    assert len(out["relative_weight"]) == len(model.blocks)
    assert all(n > 0 for n in out["relative_weight"])


def test_block_gradients_leave_no_trace_on_the_model():
    torch.manual_seed(0)
    model = build_model("residual_bn", 14, in_channels=1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = bn_buffers(model)
    signals.block_gradients(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in bn_buffers(model).items())
    assert model.training  # mode restored


def saturated():
    """A net that puts class 0 first by a margin of 1e4, and a batch of class 0: its loss is exactly 0."""
    torch.manual_seed(0)
    model = build_model("residual", 14, in_channels=1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1e4] + [0.0] * 9))
    return model, torch.randn(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)


def test_a_loss_saturated_at_zero_gives_nan_and_the_saturated_flag_not_inf():
    out = signals.block_gradients(*saturated())
    assert math.isnan(out["ratio"])
    assert out["saturated"]


def test_response_std_is_read_at_every_3x3_layer_stem_included():
    model = build_model("plain_bn", 20, in_channels=1)
    convs_3x3 = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    assert len(signals.layers_3x3(model)) == 1 + 2 * 9
    assert convs_3x3 == 1 + 2 * 9
    assert len(signals.response_stds(model.eval(), torch.randn(8, 1, 8, 8))) == 19


def test_response_std_is_the_std_of_the_branch_output():
    torch.manual_seed(0)
    model = build_model("plain", 14, in_channels=1).eval()
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        expected = [model.stem[1](model.stem[0](x)).std().item()]  # the stem's conv, before its ReLU
        h = model.stem(x)
        h = torch.relu(h)
        for b in model.blocks:
            expected += [b.conv1(h).std().item(), b.residual(h).std().item()]  # before each ReLU
            h = b(h)
    assert signals.response_stds(model, x) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("variant", ["residual", "residual_bn", "residual_preact"])
def test_response_std_is_zero_for_a_zeroed_branch(variant):
    torch.manual_seed(0)
    model = build_model(variant, 14, in_channels=1)
    x = torch.randn(8, 1, 8, 8)
    assert all(s > 0 for s in signals.response_stds(model, x))
    zeroed = signals.response_stds(zero_branches(model), x)  # the stem, then conv1 and conv2 of each block
    assert zeroed[2::2] == [0.0] * len(model.blocks)
    assert all(s > 0 for s in zeroed[1::2])


def test_forward_variance_of_a_residual_stack_matches_its_analytic_growth():
    """Given x, W1 x ~ N(0, 2|x|^2/n) per unit, so E|relu(W1 x)|^2 = |x|^2 and E|W2 relu(W1 x)|^2 =
    2|x|^2; the cross term has mean 0. Hence E|x_{l+1}|^2 = 3 |x_l|^2 exactly: the second moment
    triples per block (it doubles when the branch's last layer has gain 1 instead of He's 2)."""
    width, depth, seeds = 256, 6, 5
    log_growth = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        x = torch.randn(128, width)  # (batch, width), unit variance
        v = signals.forward_variance(Stack(width, depth), x)
        log_growth.append(math.log(v[-1] / x.var().item()) / depth)
    assert math.exp(sum(log_growth) / seeds) == pytest.approx(3.0, rel=0.05)


# --- batchnorm: train and eval modes (Ioffe & Szegedy 2015) ---


def test_train_vs_eval_error_differ_with_bn_on_shifted_inputs_and_running_stats_stay():
    torch.manual_seed(0)
    x = 3 * torch.randn(64, 1, 8, 8) + 2  # far from the (0, 1) running statistics of a fresh model
    for variant, differ in [("residual_bn", True), ("residual", False)]:
        model = build_model(variant, 14, in_channels=1).eval()
        with torch.no_grad():
            y = model(x).argmax(1)  # labels = eval-mode predictions, so the eval error is 0
        before = bn_buffers(model)
        out = batchnorm.train_vs_eval_error(model, x, y, batch_size=32)
        assert out["eval_mode"] == 0
        assert (out["train_mode"] > 0) == differ
        assert all(torch.equal(before[k], v) for k, v in bn_buffers(model).items())
        assert not model.training


def test_bn_scale_change_is_the_mean_distance_of_gamma_from_one():
    model = build_model("residual_bn", 8, in_channels=1)
    assert batchnorm.bn_scale_change(model) == 0
    assert batchnorm.bn_scale_change(build_model("residual", 8, in_channels=1)) is None
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.5)
    assert batchnorm.bn_scale_change(model) == pytest.approx(0.5)


# --- lesions (Veit et al. 2016) ---


# --- propagation: signal propagation plots (Brock et al. 2021) and branches near zero ---


@functools.cache
def signals_at_init(variant: str, depth: int = 56, zero_init_residual: bool = False) -> dict:
    """A fresh net's signal propagation on Gaussian 32x32 images (BN calibrated on them, as a cell's init is)."""
    torch.manual_seed(0)
    net = build_model(variant, depth, "projection", 10, 3, zero_init_residual=zero_init_residual)
    x = torch.randn(32, 3, 32, 32)
    return propagation.block_signals(batchnorm.calibrate_bn(net, x), x)


def test_without_bn_a_residual_stream_grows_its_variance_by_about_2_5_per_block_at_init():
    """He init gives the branch twice its input's second moment q (its last conv has no ReLU after it), so the
    sum holds 3q, and the ReLU after it keeps between half (a symmetric sum) and all of it (a positive one):
    growth per block in [1.5, 3]; Brock et al.'s pre-activation nets, with no ReLU on the stream, double."""
    s = signals_at_init("residual")
    assert 1.5 < propagation.growth(s) < 3
    assert s["spp_variance"][8] > 1.5**8 * s["spp_variance"][0]  # geometric over the first stage's 9 blocks


def test_with_bn_a_residual_stream_grows_its_variance_about_linearly_within_a_stage():
    """BN hands each block's sum a branch of unit variance: variance k + c after k blocks, not c 2^k."""
    v = signals_at_init("residual_bn")["spp_variance"][:9]  # the first stage, 9 blocks at depth 56
    steps = [b - a for a, b in zip(v, v[1:])]
    assert all(step > 0 for step in steps)  # it grows at every block ...
    assert (
        0.67 < (sum(steps[4:]) / 4) / (sum(steps[:4]) / 4) < 1.5
    )  # ... by steps that do not grow (2.5^4 if geometric)
    assert signals_at_init("residual_bn")["spp_branch_variance"][3] == pytest.approx(1, abs=0.02)  # BN's gamma = 1


@pytest.mark.parametrize("variant, zero_init", [("residual_fixup", False), ("residual_bn", True)])
def test_branches_that_start_at_zero_keep_the_stream_flat(variant, zero_init):
    s = signals_at_init(variant, zero_init_residual=zero_init)
    assert propagation.growth(s) == pytest.approx(1, abs=1e-9)
    assert propagation.mean_branch_ratio(s) == 0


def test_the_branch_ratio_is_the_branch_s_norm_over_the_shortcut_s_and_plain_nets_have_none():
    s = torch.randn(4, 8, 5, 5)
    assert propagation.norm_ratio(0.25 * s, s) == pytest.approx(0.25)
    assert math.isnan(propagation.norm_ratio(s, torch.zeros_like(s)))  # never inf from a 0/0
    plain = signals_at_init("plain", depth=8)
    assert plain["branch_ratio_per_block"] == [None] * 3
    assert propagation.mean_branch_ratio(plain) is None


def test_the_squared_mean_and_variance_are_per_channel_then_averaged():
    t = torch.zeros(2, 2, 1, 2)
    t[:, 0] = 3.0  # channel 0: constant 3 (mean 3, variance 0)
    t[:, 1] = torch.tensor([[[-1.0, 1.0]], [[-1.0, 1.0]]])  # channel 1: mean 0, variance 1
    assert propagation.channel_squared_mean(t) == pytest.approx((9 + 0) / 2)
    assert propagation.channel_variance(t) == pytest.approx((0 + 1) / 2)


# --- batchnorm: BN in eval mode is a linear map, folded into the conv before it ---


def test_a_folded_bn_is_the_analytic_affine_map_of_its_conv():
    conv, bn = nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1)
    net = nn.Module()
    net.stem = nn.Sequential(conv, bn)
    net.blocks = []
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(1.0)
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(4.0 - bn.eps)
    folded = batchnorm.fold(net).stem
    assert isinstance(folded[1], nn.Identity)
    assert folded[0].weight.item() == pytest.approx(2 * 3 / 2)  # W gamma / sqrt(var + eps)
    assert folded[0].bias.item() == pytest.approx((0 - 0.5) * 3 / 2 + 1)  # (b - mean) gamma / sqrt(var + eps) + beta


@pytest.mark.parametrize("variant", ["plain_bn", "residual_bn"])
@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
def test_every_bn_net_folded_gives_its_logits_within_float32_rounding(variant, shortcut):
    torch.manual_seed(0)
    net = build_model(variant, 20, shortcut, 10, 3)
    with torch.no_grad():  # BN as training leaves it: scales, shifts and statistics away from (1, 0, 0, 1)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(16, 3, 32, 32)
    assert batchnorm.fold_difference(net, x) < 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in batchnorm.fold(net).modules())
    assert batchnorm.fold_difference(build_model(variant.replace("_bn", ""), 20, shortcut, 10, 3), x) is None


@pytest.mark.parametrize("variant", ["residual", "residual_preact"])
def test_lesion_of_a_residual_net_with_zero_branches_changes_nothing(variant):
    torch.manual_seed(0)
    model = zero_branches(build_model(variant, 14, in_channels=1))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    out = lesions.lesion_errors(model, x, y, chance=0.9)
    assert out["per_block"] == [out["intact"]] * 6
    assert [out[k] for k in ("mean_increase", "max_increase", "downsampling_mean_increase")] == [0, 0, 0]


@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
def test_a_pre_activation_net_folded_keeps_its_logits_and_only_the_bns_that_follow_a_conv_go(shortcut):
    """bn2 follows conv1 and folds into it; bn1 and the final BN follow an addition and stay."""
    torch.manual_seed(0)
    net = build_model("residual_preact", 20, shortcut, 10, 3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2)
    assert batchnorm.fold_difference(net, torch.randn(16, 3, 32, 32)) < 1e-5
    left = [m for m in batchnorm.fold(net).modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(left) == len(net.blocks) + 1


def test_the_probe_measures_a_pre_activation_net_with_finite_values():
    torch.manual_seed(0)
    net = build_model("residual_preact", 8, "projection", 10, 1)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    record = probe.diagnose(batchnorm.calibrate_bn(net, x), x, y, 10, 2, 4)
    numbers = [v for v in record.values() if isinstance(v, float)]
    assert numbers
    assert all(math.isfinite(v) for v in numbers)
    assert record["bn_fold_difference"] < 1e-4


def test_lesion_skips_plain_downsampling_blocks_and_restores_the_model():
    torch.manual_seed(0)
    model = build_model("plain", 14, in_channels=1).eval()
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    blocks, logits = list(model.blocks), model(x)
    out = lesions.lesion_errors(model, x, y, chance=0.9)
    assert [e is None for e in out["per_block"]] == [False, False, True, False, True, False]  # n = 2 per stage
    assert list(model.blocks) == blocks
    assert torch.equal(model(x), logits)
    with lesions.deleted(model, 1):  # a real deletion changes the function
        assert not torch.allclose(model(x), logits)


@pytest.mark.parametrize("variant", ["plain_bn", "residual_bn", "residual_preact"])
def test_lesions_from_the_cached_block_inputs_equal_running_the_net_with_the_block_deleted(variant):
    torch.manual_seed(0)
    model = build_model(variant, 14, in_channels=1)
    with torch.no_grad():  # BN statistics and scales away from their initial values, so that lesions matter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(300, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # a third wrong: the intact error is 1/3
    out = lesions.lesion_errors(model, x, y, chance=0.9, batch_size=128)  # chunks of 128, 128 and 44
    expected = []
    for i, block in enumerate(model.blocks):
        if not lesions.deletable(block):
            expected.append(None)
            continue
        with lesions.deleted(model, i):
            expected.append(batchnorm.error(model, x, y, 128))
    assert out["intact"] == batchnorm.error(model, x, y, 128) == 100 / 300
    assert out["per_block"] == expected
    assert set(expected) - {None, out["intact"]}  # some lesions change the error


def test_lesions_report_downsampling_blocks_apart_and_flag_a_net_at_chance():
    torch.manual_seed(0)
    model = build_model("residual", 14, in_channels=1).eval()
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # the intact net is right on every image: error 0
    out = lesions.lesion_errors(model, x, y, chance=0.9)
    assert out["intact"] == 0
    assert not out["at_chance"]
    assert out["downsampling"] == [False, False, True, False, True, False]
    increases = [e for e, down in zip(out["per_block"], out["downsampling"]) if not down]
    assert out["mean_increase"] == pytest.approx(sum(increases) / 4)
    assert out["downsampling_mean_increase"] == pytest.approx((out["per_block"][2] + out["per_block"][4]) / 2)
    wrong = (y + 1) % 10  # every label wrong: error 1, at or above chance
    assert lesions.lesion_errors(model, x, wrong, chance=0.9)["at_chance"]


# --- shattering (Balduzzi et al. 2017) ---


def test_a_linear_net_has_the_same_gradient_everywhere_so_every_correlation_is_one():
    torch.manual_seed(0)
    model = Linear(3 * 8 * 8, 10)
    g = shattering.input_gradients_along_path(model, torch.randn(3, 8, 8), torch.randn(3, 8, 8), target=4, points=100)
    assert g.shape == (100, 3 * 8 * 8)
    assert torch.allclose(g, model.blocks[1].weight[4].expand_as(g))  # d logit_4 / dx = W[4] everywhere
    assert shattering.gradient_autocorrelation(g, 5) == pytest.approx([1.0] * 5)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    out = shattering.shattering(model, x, y, pairs=8, points=16)
    assert out["correlation"] == pytest.approx(1.0)
    assert out["correlation_std"] == pytest.approx(0.0, abs=1e-12)
    assert out["lag1"] == pytest.approx(1.0)
    assert out["by_distance"] == pytest.approx([1.0] * 16)
    assert len(out["correlation_pairs"]) == 8


def test_autocorrelation_separates_white_from_brown_noise():
    torch.manual_seed(0)
    white = torch.randn(4096)
    brown = white.cumsum(0)  # a random walk: Balduzzi et al.'s "brown noise"
    assert abs(shattering.shattering_score(white)) < 0.05
    assert shattering.shattering_score(brown) > 0.95
    acf = shattering.gradient_autocorrelation(brown, 10)
    assert (acf[1:] < acf[:-1]).all()  # correlation falls with the lag


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
            model = batchnorm.calibrate_bn(build_model(variant, depth, in_channels=1), x)
            score[variant, depth] = shattering.shattering(model, x, y, pairs=4, points=64)["lag1"]
    # 64 points per path: with 16, neighbouring points are too far apart for the residual net's gradients to
    # stay correlated at depth 56, and the two nets' values differ by less than their spread over pairs
    assert score["plain_bn", 56] < score["plain_bn", 8] - 0.5
    assert score["plain_bn", 56] < score["residual_bn", 56] - 0.2


# --- the probe: the batch, and every measure on it ---


def test_probe_is_stratified_by_class_alternates_classes_and_depends_on_the_seed_only():
    labels = torch.arange(10).repeat_interleave(36)  # sorted by class, as an ImageFolder test split is
    picked = probe.indices(labels, 256, seed=0)
    counts = torch.bincount(labels[picked], minlength=10)
    assert len(set(picked)) == 256
    assert counts.max() - counts.min() <= 1  # 25 or 26 of each class
    assert all(labels[a] != labels[b] for a, b in zip(picked[::2], picked[1::2]))  # every pair: two classes
    assert picked == probe.indices(labels, 256, seed=0)
    assert picked != probe.indices(labels, 256, seed=1)
    assert picked[:10] != list(range(0, 360, 36))  # shuffled within each class, not the first of each
    uneven = torch.tensor([0] * 3 + [1] * 50)  # a class runs out: the rest come from the others
    assert sorted(probe.indices(uneven, 20, seed=0)) == sorted(set(probe.indices(uneven, 20, seed=0)))
    assert torch.bincount(uneven[probe.indices(uneven, 20, seed=0)]).tolist() == [3, 17]


def test_the_probe_record_writes_a_saturated_ratio_as_null_never_inf():
    record = probe.diagnose(*saturated(), num_classes=10, pairs=2, points=8)
    assert set(probe.SCALARS) <= set(record)
    assert record["grad_ratio"] is None  # JSON: null
    assert record["grad_saturated"] is True


def test_the_probe_record_keeps_scalars_and_per_block_lists_apart():
    """A scalar of metrics.json and a per-block list of diagnostics.json under one name: the scalar would replace
    the list (the record is one dict)."""
    from bench.tracking import BLOCK_COLUMNS

    torch.manual_seed(0)
    net = build_model("residual_bn", 8, "projection", 10, 1)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    record = probe.diagnose(batchnorm.calibrate_bn(net, x), x, y, 10, 2, 4)
    for key in probe.SCALARS:
        assert not isinstance(record[key], list), key
    for key in BLOCK_COLUMNS:
        assert len(record[key]) == 3, key


def test_the_probe_record_of_an_untrained_net_has_no_lesions():
    torch.manual_seed(0)
    model = build_model("plain", 8, in_channels=1)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    record = probe.diagnose(model, x, y, num_classes=10, pairs=2, points=8, lesions=False)
    assert record["lesion_error"] is None
    assert record["intact_error"] is None
    assert len(record["response_std"]) == 1 + 2 * len(model.blocks)
