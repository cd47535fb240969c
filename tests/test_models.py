import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.diagnostics.signals import forward_variance
from bench.models import BasicBlock, build_model
from bench.record import SHORTCUTS, VARIANTS

GRID_DEPTHS = [8, 14, 20, 32, 44, 56, 110]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("depth", GRID_DEPTHS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_cell_builds_and_maps_inputs_to_logits(variant, depth, shortcut):
    torch.manual_seed(0)
    m = build_model(variant, depth, shortcut, num_classes=10, in_channels=3).eval()
    y = m(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    assert len(m.blocks) == 3 * (depth - 2) // 6  # the blocks, reachable in order


@pytest.mark.slow
def test_resnet_1202_builds():
    m = build_model("residual_bn", 1202, "zero_pad")  # train mode: BN on batch statistics keeps the stream finite
    assert round(n_params(m) / 1e6, 1) == 19.4  # He et al. Table 6
    assert torch.isfinite(m(torch.randn(2, 3, 32, 32))).all()


def test_other_shapes_and_classes():
    m = build_model("plain_bn", 8, num_classes=100, in_channels=1)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 100)


@pytest.mark.parametrize("depth,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_parameter_counts_match_he_et_al_table_6(depth, millions):
    counts = {v: n_params(build_model(v, depth, "zero_pad")) for v in VARIANTS}
    assert round(counts["residual_bn"] / 1e6, 2 if depth < 110 else 1) == millions
    assert counts["plain"] == counts["residual"]
    assert counts["plain_bn"] == counts["residual_bn"]
    # option B adds the two 1x1 projections, to residual nets only
    assert n_params(build_model("residual_bn", depth, "projection")) > counts["residual_bn"]
    assert n_params(build_model("plain_bn", depth, "projection")) == counts["plain_bn"]


@pytest.mark.parametrize(
    "kwargs,names",
    [
        (dict(variant="resnet", depth=20), "plain, plain_bn, residual, residual_bn"),
        (dict(variant="plain", depth=21), "8, 14, 20"),
        (dict(variant="plain", depth=2), "8, 14, 20"),
        (dict(variant="plain", depth=20, shortcut="option_c"), "projection, zero_pad"),
    ],
)
def test_bad_values_raise_listing_valid_ones(kwargs, names):
    with pytest.raises(ValueError, match=names):
        build_model(**kwargs)


def test_bias_only_where_no_bn_follows():
    for variant, (_, bn) in VARIANTS.items():
        convs = [m for m in build_model(variant, 8).modules() if isinstance(m, torch.nn.Conv2d)]
        assert all((c.bias is None) == bn for c in convs), variant


def test_batchnorm_uses_batch_statistics_in_train_and_running_statistics_in_eval():
    torch.manual_seed(0)
    m = build_model("plain_bn", 8)
    bn = m.stem[1]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert bn.num_features == 16  # per channel of the conv
    seen = {}
    bn.register_forward_hook(lambda mod, i, o: seen.update(inp=i[0], out=o))
    x = torch.randn(16, 3, 32, 32) * 3 + 1
    m.train()(x)
    per_channel = seen["out"].transpose(0, 1).flatten(1)  # (C, B*H*W)
    assert torch.allclose(per_channel.mean(1), torch.zeros(16), atol=1e-5)
    assert torch.allclose(per_channel.var(1, unbiased=False), torch.ones(16), atol=1e-3)
    assert not torch.allclose(bn.running_mean, torch.zeros(16))  # running stats were updated

    m.eval()(x)
    expected = (seen["inp"] - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    assert torch.allclose(seen["out"], expected, atol=1e-5)
    assert not torch.allclose(seen["out"].transpose(0, 1).flatten(1).mean(1), torch.zeros(16), atol=1e-3)


@pytest.mark.parametrize("bn", [False, True])
def test_residual_block_with_zeroed_branch_computes_relu_x(bn):
    block = BasicBlock(16, 16, 1, skip=True, norm_layer=nn.BatchNorm2d if bn else None, shortcut="projection").eval()
    last = block.bn2 if bn else block.conv2
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(4, 16, 8, 8)
    assert torch.equal(block(x), F.relu(x))
    plain = BasicBlock(16, 16, 1, skip=False, norm_layer=nn.BatchNorm2d if bn else None, shortcut="projection").eval()
    plain.load_state_dict(block.state_dict())
    assert torch.equal(plain(x), torch.zeros_like(x))  # without the skip, nothing gets through


def test_zero_pad_shortcut_subsamples_and_pads_channels():
    block = BasicBlock(16, 32, 2, skip=True, norm_layer=nn.BatchNorm2d, shortcut="zero_pad")
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert not list(block.shortcut.parameters())
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert s[:, :8].abs().sum() == 0
    assert s[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("variant", ["residual", "residual_bn"])
def test_zero_init_residual_makes_every_residual_block_the_identity(variant):
    torch.manual_seed(0)
    model = build_model(variant, 14, in_channels=1, zero_init_residual=True).eval()
    x = F.relu(torch.randn(4, 16, 8, 8))  # a block's input is post-ReLU
    for b in model.blocks[:2]:  # identity-shortcut blocks: h(x) = relu(0 + x) = x
        assert torch.equal(b(x), x)
    plain = build_model(variant.replace("residual", "plain"), 14, in_channels=1, zero_init_residual=True)
    assert all(b.conv2.weight.abs().sum() > 0 for b in plain.blocks)  # plain blocks are left alone


def test_fixup_scales_the_first_conv_zeroes_the_last_and_keeps_the_stream_at_every_depth():
    naive = build_model("residual", 56, in_channels=1)
    torch.manual_seed(0)
    fixup = build_model("residual_fixup", 56, in_channels=1)
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in fixup.blocks)
    assert all(float(b.bn2.scale) == 1.0 for b in fixup.blocks)  # Fixup's scalar multiplier, learned
    torch.manual_seed(0)
    reference = build_model("residual", 56, in_channels=1)
    ratio = (fixup.blocks[0].conv1.weight.std() / reference.blocks[0].conv1.weight.std()).item()
    assert ratio == pytest.approx(27**-0.5, rel=1e-5)  # L^(-1/2), L = 27 residual branches
    x = torch.randn(64, 1, 8, 8)
    stream = forward_variance(fixup, x)
    assert stream[8] == pytest.approx(stream[0])
    assert stream[26] == pytest.approx(stream[18])  # identity within a stage
    assert forward_variance(naive, x)[8] > 10 * forward_variance(naive, x)[0]  # He init: about doubles per block


# --- residual_preact: He et al. 2016b's full pre-activation units ---


def test_a_pre_activation_net_has_the_parameters_of_the_original_with_option_a():
    """Against residual_bn: no BN in the stem (-2 x 16), a final BN (+2 x 64), and each stage's first bn1 normalises
    the narrower input (-2 x 16 - 2 x 32): the same count, 1.7 M at depth 110 as in He et al. 2016b, Table 1."""
    for depth in (20, 56, 110):
        preact, original = (
            build_model("residual_preact", depth, "zero_pad"),
            build_model("residual_bn", depth, "zero_pad"),
        )
        assert n_params(preact) == n_params(original), depth
    assert round(n_params(build_model("residual_preact", 110, "zero_pad")) / 1e6, 1) == 1.7


@pytest.mark.parametrize("depth", [8, 20])
def test_a_pre_activation_net_s_parameters_are_its_convs_bns_and_head(depth):
    n, widths = (depth - 2) // 6, (16, 32, 64)
    expected, c = 3 * 16 * 9, 16  # the stem conv alone, without bias
    for width in widths:
        for _ in range(n):
            expected += 2 * c + 9 * c * width + 2 * width + 9 * width * width  # bn1, conv1, bn2, conv2
            expected += c * width if c != width else 0  # a 1x1 projection without bias
            c = width
    expected += 2 * 64 + 64 * 10 + 10  # the final BN, the head
    assert n_params(build_model("residual_preact", depth, "projection")) == expected


def test_a_pre_activation_block_adds_without_a_relu_after_and_is_the_identity_with_a_zero_branch():
    torch.manual_seed(0)
    net = build_model("residual_preact", 14, in_channels=1, zero_init_residual=True).eval()
    inner = net.blocks[1]  # not a stage's first block: its shortcut is the identity on x itself
    x = torch.randn(4, 16, 8, 8)  # negative values too: a ReLU after the addition would clip them
    assert torch.equal(inner(x), x)
    torch.nn.init.normal_(inner.conv2.weight)
    assert torch.equal(inner(x), inner.residual(x) + x)


def test_each_stage_s_first_pre_activation_block_feeds_both_paths_the_pre_activated_input():
    torch.manual_seed(0)
    net = build_model("residual_preact", 14, "projection", in_channels=1).eval()
    first = net.blocks[2]  # stage 2's first block: stride 2, 16 -> 32 channels
    x = torch.randn(4, 16, 8, 8)
    a = F.relu(first.bn1(x))
    assert first.shared
    assert torch.allclose(first(x), first.residual(x) + first.shortcut(a))
    assert isinstance(first.shortcut, nn.Conv2d)  # a 1x1 conv without BN: BN comes before, in the next block
    assert [type(m) for m in net.stem] == [nn.Conv2d]  # the stem: a conv alone; BN and ReLU close the net
    assert [type(m) for m in net.final] == [nn.BatchNorm2d, nn.ReLU]
