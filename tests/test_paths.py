"""bench/paths/: the gradient carried by paths of each length (Veit et al. 2016, Sec. 6, Fig. 6), exact on a
linear residual net, summing to the ordinary gradient over all 2^n paths on the real ones, and the band of path
lengths that carries most of it."""

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_landscape import saved_cell
from torch import nn

from bench import models
from bench.paths import gradients
from bench.paths.stage import paths
from bench.report import paths as report_paths

A = (0.5, -2.0, 3.0)  # the branches' scales of the linear net


class Scale(nn.Module):
    """The branch of a linear block: multiplication by the scalar a."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        return self.a * x


class LinearBlock(nn.Module):
    """h(x) = a x + x: a residual block without ReLU whose branch ends in `branch_end`."""

    def __init__(self, a: float):
        super().__init__()
        self.skip, self.branch_end, self.shortcut = True, Scale(a), nn.Identity()

    def forward(self, x):
        return self.branch_end(x) + self.shortcut(x)


class LinearNet(nn.Module):
    """head(prod_i (1 + a_i) x): the path through the branches of S carries prod_{i in S} a_i."""

    def __init__(self, scales, features=4, classes=5):
        super().__init__()
        self.blocks = nn.Sequential(*(LinearBlock(a) for a in scales))
        self.head = nn.Linear(features, classes).double()

    def forward(self, x):
        return self.head(self.blocks(x))


def linear_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, generator=g, dtype=torch.float64), torch.tensor([0, 4, 2])


def skip_only_gradient(net, x, y, scales):
    """By hand: z = prod(1 + a) W x + b, dL/dz = (softmax(z) - onehot(y)) / B, and the skip-only path's input
    gradient is dL/dz W."""
    w, b = net.head.weight.detach(), net.head.bias.detach()
    z = math.prod(1 + a for a in scales) * x @ w.T + b
    return (z.softmax(1) - F.one_hot(y, 5).double()) / len(y) @ w


def test_on_a_linear_net_the_path_through_the_branches_of_s_carries_the_product_of_their_scales():
    net, (x, y) = LinearNet(A), linear_batch()
    skip_only = skip_only_gradient(net, x, y, A)
    for k in range(len(A) + 1):
        for s in itertools.combinations(range(len(A)), k):
            expected = math.prod(A[i] for i in s) * skip_only
            assert torch.allclose(gradients.gated_input_gradient(net, x, y, set(s)), expected, rtol=1e-12), s


def test_on_a_linear_net_of_equal_scales_a_path_of_length_k_carries_a_to_the_k():
    scales = (-0.5,) * 4
    net, (x, y) = LinearNet(scales), linear_batch()
    r = gradients.path_gradient_norms(net, x, y, samples=3, generator=torch.Generator().manual_seed(0))
    assert r["per_path"][0] == pytest.approx(float(skip_only_gradient(net, x, y, scales).norm()), rel=1e-12)
    assert r["per_path"] == pytest.approx([0.5**k * r["per_path"][0] for k in range(5)], rel=1e-12)
    assert r["per_path_std"] == pytest.approx([0.0] * 5, abs=1e-15)  # every subset of a size carries the same


def real_net(variant, shortcut="projection"):
    """A depth-8 net (3 blocks) whose eval-mode BN and Fixup branches are not the identity or zero."""
    torch.manual_seed(0)
    model = models.build_model(variant, 8, shortcut=shortcut, num_classes=10, in_channels=1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 1.5)
        for b in model.blocks:
            b.conv2.weight.normal_(0, 0.1)  # Fixup zeroes it: its branch would carry no gradient
    return model


def real_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 3, 7, 9])


@pytest.mark.parametrize(
    "variant, shortcut",
    [
        ("residual_bn", "projection"),
        ("residual", "projection"),
        ("residual_fixup", "projection"),
        ("residual_bn", "zero_pad"),
        ("residual_preact", "projection"),
        ("residual_preact", "zero_pad"),
    ],
)
def test_the_gradients_of_all_2_to_the_n_paths_sum_to_the_ordinary_input_gradient(variant, shortcut):
    model, (x, y) = real_net(variant, shortcut).eval(), real_batch()
    x0 = x.clone().requires_grad_(True)
    (ordinary,) = torch.autograd.grad(F.cross_entropy(model(x0), y), x0)
    subsets = [set(s) for k in range(4) for s in itertools.combinations(range(3), k)]
    parts = [gradients.gated_input_gradient(model, x, y, s) for s in subsets]
    assert len(parts) == 8
    assert all(p.shape == x.shape for p in parts)
    assert torch.allclose(sum(parts), ordinary, rtol=1e-4, atol=2e-6 * float(ordinary.abs().max()))
    assert float(parts[-1].norm()) > 0  # the path through every branch carries gradient: the sum is not trivial


def test_the_path_counts_are_binomial_and_sum_to_2_to_the_n():
    model, (x, y) = real_net("residual_bn"), real_batch()
    r = gradients.path_gradient_norms(model, x, y, samples=2, generator=torch.Generator().manual_seed(0))
    assert r["blocks"] == 3
    assert r["k"] == [0, 1, 2, 3]
    assert r["paths"] == [1, 3, 3, 1]
    assert sum(r["paths"]) == 2**3
    assert r["total"] == [c * p for c, p in zip(r["paths"], r["per_path"])]
    assert r["per_path_std"][0] == r["per_path_std"][3] == 0.0  # one subset each: measured once


def test_the_one_forward_measurement_agrees_with_a_forward_per_subset_at_the_ends():
    model, (x, y) = real_net("residual_bn"), real_batch()
    r = gradients.path_gradient_norms(model, x, y, samples=2, generator=torch.Generator().manual_seed(0))
    assert r["per_path"][0] == pytest.approx(float(gradients.gated_input_gradient(model, x, y, set()).norm()))
    assert r["per_path"][3] == pytest.approx(float(gradients.gated_input_gradient(model, x, y, {0, 1, 2}).norm()))


def test_the_hooks_leave_the_forward_unchanged():
    model, (x, _) = real_net("residual_bn").eval(), real_batch()
    with torch.no_grad():
        plain = model(x)
    with gradients.gates(model), torch.no_grad():
        hooked = model(x)
    with gradients.gates(model):
        hooked_with_grad = model(x.clone().requires_grad_(True))
    assert torch.equal(hooked, plain)
    assert torch.equal(hooked_with_grad.detach(), plain)


def hooks(model):
    return [h for b in model.blocks for m in (b.branch_end, b.shortcut) for h in m._forward_hooks]


def test_the_hooks_are_removed_and_the_mode_restored_even_when_the_loss_fails():
    model, (x, y) = real_net("residual_bn").train(), real_batch()
    gradients.path_gradient_norms(model, x, y, samples=1, generator=torch.Generator().manual_seed(0))
    assert hooks(model) == []
    assert all(m.training for m in model.modules())
    with pytest.raises(IndexError):
        gradients.gated_input_gradient(model, x, torch.tensor([0, 1, 2, 10]), {0})  # class 10 of 10
    assert hooks(model) == []
    assert all(m.training for m in model.modules())


def test_a_plain_net_has_a_single_path_and_is_refused():
    model, (x, y) = models.build_model("plain_bn", 8, num_classes=10, in_channels=1), real_batch()
    with pytest.raises(ValueError, match="plain_bn has no skip blocks"):
        gradients.path_gradient_norms(model, x, y, samples=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="plain_bn has no skip blocks"):
        gradients.gated_input_gradient(model, x, y, set())


def test_the_same_seed_draws_the_same_subsets():
    model, (x, y) = real_net("residual"), real_batch()
    a, b = (
        gradients.path_gradient_norms(model, x, y, samples=3, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    )
    assert a == b


def test_the_band_of_a_delta_is_its_one_length():
    assert gradients.band([0.0, 0.0, 5.0, 0.0]) == (2, 2)


def test_the_band_of_a_uniform_total_holds_its_central_mass():
    assert gradients.band([1.0, 1.0, 1.0, 1.0], mass=0.5) == (0, 2)  # shares 1/4, 1/2, 3/4, 1 reach 1/4 and 3/4
    assert gradients.band([1.0, 1.0, 1.0, 1.0]) == (0, 3)  # 5% and 95%
    assert gradients.band([1.0] * 10, mass=0.8) == (0, 8)  # reaches 0.9 at k = 8, up to rounding


@pytest.mark.parametrize("total", [[0.0, 0.0], [1.0, float("nan")], [1.0, float("inf")], [2.0, -1.0], []])
def test_the_band_refuses_a_total_that_is_not_positive_and_finite(total):
    with pytest.raises(ValueError, match="the total gradient must be finite"):
        gradients.band(total)


# --- bench paths on saved cells, and the report ---


def test_bench_paths_measures_each_residual_cell_and_records_a_diverged_one(tmp_path, params, digits_dir):
    p = params("grid.depths=[8]", "grid.seeds=[0,1]", "paths.seeds=[0,1]", "paths.subset=8", "paths.samples=1")
    runs = tmp_path / "runs"
    for variant in p.paths.variants:
        saved_cell(runs, f"{variant}-8-0", variant)
        saved_cell(runs, f"{variant}-8-1", variant, diverged=variant == "residual_fixup")
    s = paths(p, runs, digits_dir, tmp_path / "out")
    assert s["cells"]["residual_fixup-8-1"] == {"variant": "residual_fixup", "depth": 8, "seed": 1, "diverged": True}
    r = s["cells"]["residual_bn-8-0"]
    assert r["blocks"] == 3
    assert r["paths"] == [1, 3, 3, 1]
    assert 0 <= r["band"][0] <= r["band"][1] <= 3
    assert json.loads((tmp_path / "out/paths.json").read_text())["cells"] == s["cells"]
    assert (tmp_path / "out/paths.png").stat().st_size > 0


def test_bench_paths_refuses_a_plain_variant_before_any_work(tmp_path, params, digits_dir):
    p = params("grid.depths=[8]", "paths.variants=[residual_bn,plain_bn]")
    with pytest.raises(ValueError, match="paths.variants holds plain_bn, a plain net: it has a single path"):
        paths(p, tmp_path / "runs", digits_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def summary_of(totals: dict) -> dict:
    """A paths.json with these totals over k per (variant, depth), a seed each."""
    cells = {}
    for (v, d), per_seed in totals.items():
        for s, total in enumerate(per_seed):
            n = len(total) - 1
            band = gradients.band(total)
            r = {"variant": v, "depth": d, "seed": s, "diverged": False, "blocks": n, "k": list(range(n + 1))}
            cells[f"{v}-{d}-{s}"] = r | {"total": total, "band": list(band)}
    return {"params": {"subset": 64, "samples": 4, "seed": 0, "mass": 0.9}, "cells": cells, "not_measured": []}


def test_the_claim_sets_the_gradient_weighted_mean_length_against_half_the_blocks():
    short = summary_of({("residual_bn", 56): [[1, 4, 1, 0, 0], [1, 2, 1, 0, 0], [2, 2, 0, 0, 0]]})
    (c,) = report_paths.claims(short, 56)
    assert c["holds"] is True
    assert c["statistic"]["estimate"] == pytest.approx(2 - (1 + 1 + 0.5) / 3)  # n / 2 = 2; means 1, 1 and 0.5
    long = summary_of({("residual_bn", 56): [[0, 0, 1, 4, 1], [0, 0, 0, 1, 3], [0, 0, 0, 2, 2]]})
    assert report_paths.claims(long, 56)[0]["holds"] is False
    one = summary_of({("residual_bn", 56): [[1, 4, 1, 0, 0]]})
    assert report_paths.claims(one, 56)[0]["holds"] == "not shown"
    assert report_paths.claims(None, 56)[0]["why"] == "the paths stage did not run"


def test_the_report_section_tables_each_seed_s_band_and_links_the_figure():
    s = summary_of({("residual_bn", 8): [[1, 4, 1, 0], [0, 1, 0, 0]]})
    text = report_paths.section(s, "paths", ["residual_bn", "residual"], [8])
    assert "| residual_bn | 0-2, 1-1 of 3 (mean 1.0, n/2 = 1.5) |" in text
    assert "| residual |" not in text
    assert "![path lengths](paths/paths.png)" in text
    assert report_paths.section(None, "paths", ["residual_bn"], [8]) == ""
