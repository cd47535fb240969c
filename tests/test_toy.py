"""`bench toy`: Balduzzi et al. 2017's toy net and its two shattering statistics."""

import json
import statistics

import pytest
import torch

from bench.config import Toy
from bench.diagnostics.shattering import gradient_correlations, shattering_score
from bench.toy import correlation, init_weights, inputs, last_hidden, net_statistics, paper, run, toy, toy_jacobian

SMALL = {"width": 64, "points": 64}


def identity(z):
    return z


def mean_correlation(depth, residual, seeds=3):
    return statistics.fmean(correlation(toy_jacobian(depth, residual, seed=s, **SMALL)[0]) for s in range(seeds))


# --- the statistic ---


@pytest.mark.parametrize("depth", [0, 3])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_a_linear_net_has_the_same_gradient_everywhere_so_correlation_one(depth, residual, batchnorm):
    """No ReLU (or no layer at all): y is affine in x, J(x) is one vector, R(i, j) = 1 for every pair."""
    jacobian, dydx = toy_jacobian(depth, residual, seed=1, batchnorm=batchnorm, activation=identity, **SMALL)
    assert torch.equal(jacobian, jacobian[:1].expand_as(jacobian))
    assert correlation(jacobian) == pytest.approx(1.0, abs=1e-12)
    assert shattering_score(dydx + 1e-3 * torch.arange(len(dydx))) == pytest.approx(1.0)  # a ramp is smooth


def test_depth_one_plain_net_gives_the_papers_one_half():
    """BN centres h_0 = x w + b at x = 0, so every ReLU of layer 1 switches at 0: J(x) takes one value for
    x < 0 and one for x > 0, random and orthogonal in expectation. Same side: R = 1; opposite sides: R ~ 0;
    the mean over pairs is about the fraction of same-side pairs, 1/2 = 2^-1."""
    points = 64
    values = []
    for seed in range(8):
        jacobian = toy_jacobian(1, False, width=200, points=points, seed=seed)[0]
        c = gradient_correlations(jacobian)
        half = points // 2
        assert torch.allclose(c[:half, :half], torch.ones(half, half, dtype=c.dtype), atol=1e-12)
        assert torch.allclose(c[half:, half:], torch.ones(half, half, dtype=c.dtype), atol=1e-12)
        values.append(correlation(jacobian))
    assert statistics.fmean(values) == pytest.approx(paper([1])["plain"][0], abs=0.05)


def test_the_correlation_is_the_expectation_over_the_readout():
    """R(i, j) = E_v[f'(x_i) f'(x_j)] / sqrt(E_v f'(x_i)^2 E_v f'(x_j)^2), f' = J v: compare with many readouts."""
    jacobian = toy_jacobian(4, False, width=32, points=16, seed=0)[0]
    readouts = torch.randn(32, 200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = jacobian @ readouts  # (points, readouts): dy/dx of 200,000 nets sharing the hidden weights
    second_moment = grads @ grads.T / grads.shape[1]
    d = second_moment.diagonal().sqrt()
    assert torch.allclose(second_moment / torch.outer(d, d), gradient_correlations(jacobian), atol=0.02)


def test_forward_mode_jacobian_matches_reverse_mode_gradient():
    """dy/dx = J v from one forward-mode pass equals autograd's dy/dx with the BN statistics held fixed."""
    weights = init_weights(5, 32, seed=3)
    x = inputs(16).requires_grad_()
    y = last_hidden(x, weights, residual=True) @ weights["v"]
    (expected,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(toy_jacobian(5, True, width=32, points=16, seed=3)[1], expected.squeeze(1))


def test_the_statistics_are_correlations():
    for depth, residual in [(1, False), (6, False), (6, True)]:
        jacobian, dydx = toy_jacobian(depth, residual, seed=2, **SMALL)
        c = gradient_correlations(jacobian)
        assert c.abs().max() <= 1 + 1e-12
        assert torch.allclose(c.diagonal(), torch.ones(len(c), dtype=c.dtype))
        assert -1 <= correlation(jacobian) <= 1
        assert -1 <= shattering_score(dydx) <= 1


# --- the paper's result ---


def test_plain_nets_decorrelate_with_depth_faster_than_residual_nets():
    """Balduzzi et al. 2017: 2^-L for plain nets, a slow decay for resnets with BN."""
    plain = [mean_correlation(d, False) for d in (1, 2, 4, 8)]
    residual = [mean_correlation(d, True) for d in (1, 2, 4, 8)]
    assert plain == sorted(plain, reverse=True)
    assert residual == sorted(residual, reverse=True)
    assert all(p < r for p, r in zip(plain, residual))
    assert plain[-1] / plain[0] < residual[-1] / residual[0]
    assert plain[-1] < 0.05 < 0.1 < residual[-1]


def test_lag1_plain_net_shatters_with_depth_residual_net_does_not():
    """The paper's Fig. 2 at lag 1: plain nets' dy/dx turns to white noise along the line, resnets' stays brown."""

    def lag1(depth, residual):
        return statistics.fmean(net_statistics(depth, residual, 64, 256, s)["lag1"] for s in range(2))

    assert lag1(4, False) > 0.8
    assert lag1(30, False) < 0.2
    assert lag1(30, True) > 0.6


def test_paper_curves():
    assert paper([1, 4, 16]) == {"plain": [0.5, 0.0625, 2**-16], "residual": [1.0, 0.5, 0.25]}


# --- the stage ---


def test_same_seed_same_numbers_other_seed_other_numbers():
    assert net_statistics(6, True, 32, 32, seed=4) == net_statistics(6, True, 32, 32, seed=4)
    assert net_statistics(6, True, 32, 32, seed=4) != net_statistics(6, True, 32, 32, seed=5)


def test_bench_toy_writes_its_figure_and_numbers(tmp_path):
    cfg = Toy(depths=[1, 8], seeds=2, width=32, points=32)
    results = toy(cfg, tmp_path)
    saved = json.loads((tmp_path / "toy.json").read_text())
    assert set(saved) == {"plain", "residual"}
    assert set(saved["plain"]) == {"1", "8"}
    for family in ("plain", "residual"):
        for depth in (1, 8):
            entry = saved[family][str(depth)]
            assert set(entry) == {"correlation", "lag1"}
            assert all(len(v) == 2 for v in entry.values())
            assert entry == results[family][depth]
            assert entry["correlation"][1] == net_statistics(depth, family == "residual", 32, 32, seed=1)["correlation"]
    assert (tmp_path / "toy_shattering.png").stat().st_size > 10_000
    assert run(cfg) == results
