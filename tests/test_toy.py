"""`bench toy`: Balduzzi et al. 2017's toy net and its two shattering statistics."""

import json
import math
import statistics

import pytest
import torch

from bench.diagnostics.shattering import gradient_correlations, shattering_score
from bench.schema import Toy
from bench.toy import (
    STATISTICS,
    correlation,
    figure,
    gradient_moment,
    he,
    init_weights,
    inputs,
    last_hidden,
    loglog_slope,
    net_statistics,
    paper,
    run,
    slopes,
    toy,
    toy_jacobian,
)

SMALL = {"width": 64, "points": 64}


def identity(z):
    return z


@pytest.fixture(scope="module")
def small_results():
    """A small run of three depths, shared by the tests of the fits and of the figure."""
    return run(Toy(depths=[1, 4, 16], seeds=2, width=32, points=32))


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


def test_the_gradient_moment_is_the_expectation_over_the_readout():
    """gradient_moment = mean over points of E_v[(J v)^2], v ~ He's N(0, 2/width): compare with many readouts."""
    jacobian = toy_jacobian(4, True, width=32, points=16, seed=0)[0]
    readouts = he(32, 100_000, torch.Generator().manual_seed(0))  # each column a readout v, as init_weights draws it
    assert (jacobian @ readouts).square().mean().item() == pytest.approx(gradient_moment(jacobian), rel=0.02)


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


# --- the fits ---


@pytest.mark.parametrize("exponent", [-1.1, -0.5, 0.0, 2.0])
def test_the_fitted_slope_of_an_exact_power_law_is_its_exponent(exponent):
    depths = [1, 2, 4, 8, 16, 32, 64]
    assert loglog_slope(depths, [0.3 * d**exponent for d in depths]) == pytest.approx(exponent, abs=1e-12)
    assert loglog_slope([1, 3, 10], [7.0 * d**exponent for d in (1, 3, 10)]) == pytest.approx(exponent, abs=1e-12)


def test_the_fit_skips_values_a_log_cannot_take_and_needs_two_depths():
    depths = [1, 2, 4, 8, 16]
    values = [d**-1.5 for d in depths]
    for bad in (0.0, -0.01, math.nan, math.inf):
        assert loglog_slope(depths, [*values[:3], bad, values[4]]) == pytest.approx(-1.5, abs=1e-12)
    assert math.isnan(loglog_slope([4, 8], [0.5, -0.1]))
    assert math.isnan(loglog_slope([4], [0.5]))
    assert loglog_slope(depths, paper(depths)["residual"]) == pytest.approx(-0.5, abs=1e-12)


def test_the_slopes_fit_the_mean_over_seeds(small_results):
    results = small_results
    fits = slopes(results)
    assert set(fits) == {f"{k}/{f}" for k in ("slope", "gradient_moment_slope") for f in ("plain", "residual")}
    for family in ("plain", "residual"):
        for key, statistic in (("slope", "correlation"), ("gradient_moment_slope", "gradient_moment")):
            means = [statistics.fmean(results[family][d][statistic]) for d in (1, 4, 16)]
            assert fits[f"{key}/{family}"] == loglog_slope([1, 4, 16], means)
    assert fits["slope/residual"] < 0  # the residual net's correlation falls with depth


def test_the_residual_toys_gradient_moment_grows_faster_than_linearly():
    """The module docstring's deviation from Theorem 3, which assumes linear growth (exponent 1)."""
    depths = [4, 8, 16, 32]
    moments = [
        statistics.fmean(net_statistics(d, True, 64, 64, s)["gradient_moment"] for s in range(2)) for d in depths
    ]
    assert loglog_slope(depths, moments) > 1


# --- the stage ---


def test_same_seed_same_numbers_other_seed_other_numbers():
    assert net_statistics(6, True, 32, 32, seed=4) == net_statistics(6, True, 32, 32, seed=4)
    assert net_statistics(6, True, 32, 32, seed=4) != net_statistics(6, True, 32, 32, seed=5)


def test_bench_toy_writes_its_figure_and_numbers(tmp_path):
    cfg = Toy(depths=[1, 8], seeds=2, width=32, points=32)
    results = toy(cfg, tmp_path)
    saved = json.loads((tmp_path / "toy.json").read_text())
    fits = slopes(results)
    assert set(saved) == {"plain", "residual"} | set(fits)
    assert {k: saved[k] for k in fits} == {k: None if math.isnan(v) else v for k, v in fits.items()}
    assert isinstance(saved["slope/residual"], float)
    assert isinstance(saved["gradient_moment_slope/residual"], float)
    assert set(saved["plain"]) == {"1", "8"}
    for family in ("plain", "residual"):
        for depth in (1, 8):
            entry = saved[family][str(depth)]
            assert set(entry) == set(STATISTICS) == {"correlation", "lag1", "gradient_moment"}
            assert all(len(v) == 2 for v in entry.values())
            assert entry == results[family][depth]
            assert entry["correlation"][1] == net_statistics(depth, family == "residual", 32, 32, seed=1)["correlation"]
    assert (tmp_path / "toy_shattering.png").stat().st_size > 10_000
    assert run(cfg) == results


def test_one_depth_has_no_slope_so_the_json_says_null(tmp_path):
    toy(Toy(depths=[4], seeds=1, width=16, points=16), tmp_path)
    saved = json.loads((tmp_path / "toy.json").read_text())
    assert saved["slope/plain"] is None
    assert saved["slope/residual"] is None
    assert saved["gradient_moment_slope/residual"] is None


def test_the_figures_left_axes_are_log_log_with_the_fitted_slopes_in_the_legend(small_results):
    import matplotlib.pyplot as plt

    results = small_results
    fig = figure(results)
    try:
        left, right = fig.axes
        assert (left.get_xscale(), left.get_yscale()) == ("log", "log")
        assert left.xaxis.get_transform().base == 2
        assert right.get_yscale() == "linear"  # the lag-1 autocorrelation can be negative
        labels = [t.get_text() for t in left.get_legend().get_texts()]
        fits = slopes(results)
        for family in ("plain", "residual"):
            assert f"{family} + BN (measured slope {fits[f'slope/{family}']:.2f})" in labels
        (thm3,) = [label for label in labels if "Thm. 3" in label]
        assert "assumes" in thm3
        assert f"{fits['gradient_moment_slope/residual']:.2f}" in thm3
    finally:
        plt.close(fig)
