import math

import pytest
import torch
from torch import nn

from bench.diagnostics import shattering as S
from bench.diagnostics import signals as D
from bench.models import build_model


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def zero_branches(model):
    """Every block's branch f outputs exactly 0: conv2 (and its bias) zeroed, or BN's gamma where there is BN."""
    with torch.no_grad():
        for b in model.blocks:
            b.conv2.weight.zero_()
            if b.conv2.bias is not None:
                b.conv2.bias.zero_()
            if isinstance(b.bn2, nn.BatchNorm2d):
                b.bn2.weight.zero_()
    return model


# --- shattered gradients ---


def test_linear_model_gradient_is_constant_along_the_path_so_its_correlation_is_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    g = S.input_gradients_along_path(model, torch.randn(3, 8, 8), torch.randn(3, 8, 8), target=4, points=100)
    assert g.shape == (100, 3 * 8 * 8)
    assert torch.allclose(g, model[1].weight[4].expand_as(g))  # d logit_4 / dx = W[4] everywhere
    assert S.gradient_autocorrelation(g, 5) == pytest.approx([1.0] * 5)
    assert S.shattering_score(g) == pytest.approx(1.0)


def test_autocorrelation_separates_white_from_brown_noise():
    torch.manual_seed(0)
    white = torch.randn(4096)
    brown = white.cumsum(0)  # a random walk: Balduzzi et al.'s "brown noise"
    assert abs(S.shattering_score(white)) < 0.05
    assert S.shattering_score(brown) > 0.95
    acf = S.gradient_autocorrelation(brown, 10)
    assert (acf[1:] < acf[:-1]).all()  # correlation falls with the lag


# --- vanishing / exploding ---


def test_zeroed_branch_passes_the_gradient_through_unchanged():
    torch.manual_seed(0)
    block = zero_branches(build_model("residual", 8)).blocks[0]  # identity shortcut, 16 -> 16 channels
    x = torch.relu(torch.randn(2, 16, 8, 8)).requires_grad_()  # a block's input is post-ReLU
    out = block(x)
    v = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, v)
    assert torch.equal(out, x)
    assert torch.equal(g, v * (x > 0))  # the Jacobian is the identity on active units


@pytest.mark.parametrize("variant", ["residual", "residual_bn"])
def test_response_std_is_zero_for_a_zeroed_branch(variant):
    torch.manual_seed(0)
    model = build_model(variant, 14, in_channels=1)
    x = torch.randn(8, 1, 8, 8)
    assert all(s > 0 for s in D.response_stds(model, x))
    zeroed = D.response_stds(zero_branches(model), x)  # the stem, then conv1 and conv2 of each block
    assert zeroed[2::2] == [0.0] * len(model.blocks) and all(s > 0 for s in zeroed[1::2])


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
    assert D.response_stds(model, x) == pytest.approx(expected, rel=1e-5)


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


def test_forward_variance_of_a_residual_stack_matches_its_analytic_growth():
    """Given x, W1 x ~ N(0, 2|x|^2/n) per unit, so E|relu(W1 x)|^2 = |x|^2 and E|W2 relu(W1 x)|^2 =
    2|x|^2; the cross term has mean 0. Hence E|x_{l+1}|^2 = 3 |x_l|^2 exactly: the second moment
    triples per block (it doubles when the branch's last layer has gain 1 instead of He's 2)."""
    width, depth, seeds = 256, 6, 5
    log_growth = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        x = torch.randn(128, width)  # (batch, width), unit variance
        v = D.forward_variance(Stack(width, depth), x)
        log_growth.append(math.log(v[-1] / x.var().item()) / depth)
    assert math.exp(sum(log_growth) / seeds) == pytest.approx(3.0, rel=0.05)


def test_block_gradients_one_entry_per_block_finite_ratio_and_no_side_effects():
    torch.manual_seed(0)
    model = build_model("residual_bn", 14, in_channels=1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = bn_buffers(model)
    out = D.block_gradients(model, x, y)
    assert len(out["relative_weight"]) == len(out["activation_rms"]) == len(model.blocks) == 6
    assert all(math.isfinite(n) and n > 0 for n in out["relative_weight"] + out["activation_rms"])
    rms = out["activation_rms"]
    assert out["ratio"] == pytest.approx(rms[0] / rms[-1]) and math.isfinite(out["ratio"]) and not out["saturated"]
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in bn_buffers(model).items())
    assert model.training  # mode restored


# --- lesions ---


def test_lesion_of_a_residual_net_with_zero_branches_changes_nothing():
    torch.manual_seed(0)
    model = zero_branches(build_model("residual", 14, in_channels=1))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    out = D.lesion_errors(model, x, y, chance=0.9)
    assert out["per_block"] == [out["intact"]] * 6
    assert out["mean_increase"] == out["max_increase"] == out["downsampling_mean_increase"] == 0


def test_lesion_skips_plain_downsampling_blocks_and_restores_the_model():
    torch.manual_seed(0)
    model = build_model("plain", 14, in_channels=1).eval()
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    blocks, logits = list(model.blocks), model(x)
    out = D.lesion_errors(model, x, y, chance=0.9)
    assert [e is None for e in out["per_block"]] == [False, False, True, False, True, False]  # n = 2 per stage
    assert list(model.blocks) == blocks and torch.equal(model(x), logits)
    with D.deleted(model, 1):  # a real deletion changes the function
        assert not torch.allclose(model(x), logits)


# --- BatchNorm ---


def test_train_vs_eval_error_differ_with_bn_on_shifted_inputs_and_running_stats_stay():
    torch.manual_seed(0)
    x = 3 * torch.randn(64, 1, 8, 8) + 2  # far from the (0, 1) running statistics of a fresh model
    for variant, differ in [("residual_bn", True), ("residual", False)]:
        model = build_model(variant, 14, in_channels=1).eval()
        with torch.no_grad():
            y = model(x).argmax(1)  # labels = eval-mode predictions, so the eval error is 0
        before = bn_buffers(model)
        out = D.train_vs_eval_error(model, x, y, batch_size=32)
        assert out["eval_mode"] == 0
        assert (out["train_mode"] > 0) == differ
        assert all(torch.equal(before[k], v) for k, v in bn_buffers(model).items())
        assert not model.training
