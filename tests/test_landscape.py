"""bench/landscape/: Li et al. 2018's filter-normalised directions, the loss surfaces along them (exact on a
quadratic), the non-convex fraction against the analytic Hessian, `bench landscape` on saved cells, and the
report's section and claim."""

import json

import numpy as np
import pytest
import torch

from bench import models, weights
from bench.landscape import directions, surface
from bench.landscape.stage import landscape
from bench.report import landscape as report_landscape

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])  # positive definite


def quadratic(hessian):
    """L(p) = 1/2 w^T H w for the single 2-D parameter w (flattened): its Hessian is H everywhere."""
    return lambda p: 0.5 * p["w"].flatten() @ hessian @ p["w"].flatten()


def test_each_filter_of_a_direction_has_the_norm_of_the_same_filter_of_the_weights():
    params = {"conv": torch.randn(4, 3, 3, 3) * torch.arange(1, 5).view(4, 1, 1, 1), "fc": torch.randn(10, 16)}
    d = directions.filter_normalised(params, torch.Generator().manual_seed(0))
    for name, theta in params.items():
        assert torch.allclose(d[name].flatten(1).norm(dim=1), theta.flatten(1).norm(dim=1), rtol=1e-5), name


def test_biases_and_bn_parameters_get_no_direction():
    model = models.build_model("residual_bn", 8, num_classes=10, in_channels=1)
    params = dict(model.named_parameters())
    d1, d2 = directions.two(params, seed=0)
    one_dimensional = [n for n, p in params.items() if p.dim() <= 1]
    assert one_dimensional  # BN's scales and shifts, the classifier's bias
    for name in one_dimensional:
        assert not d1[name].any(), name
        assert not d2[name].any(), name
    assert all(d1[n].any() for n, p in params.items() if p.dim() > 1)


def test_the_same_seed_draws_the_same_directions_and_another_seed_others():
    params = dict(models.build_model("plain_bn", 8, num_classes=10, in_channels=1).named_parameters())
    a, b, c = directions.two(params, 3), directions.two(params, 3), directions.two(params, 4)
    for k in params:
        assert torch.equal(a[0][k], b[0][k]), k
        assert torch.equal(a[1][k], b[1][k]), k
    classifier = [n for n, p in params.items() if p.dim() > 1][-1]
    assert not torch.equal(a[0][classifier], c[0][classifier])
    assert not torch.equal(a[0][classifier], a[1][classifier])  # the two directions differ


def test_on_a_quadratic_the_surfaces_are_exact():
    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(1, 3, generator=g, dtype=torch.float64)}
    d1 = {"w": torch.randn(1, 3, generator=g, dtype=torch.float64)}
    d2 = {"w": torch.randn(1, 3, generator=g, dtype=torch.float64)}
    h = A.double()
    coords = surface.coordinates(2.0, 5)
    w, u, v = theta["w"].flatten(), d1["w"].flatten(), d2["w"].flatten()

    def exact(a, b):
        x = w + a * u + b * v
        return float(0.5 * x @ h @ x)

    line = surface.line(quadratic(h), theta, d1, coords)
    plane = surface.plane(quadratic(h), theta, d1, d2, coords)
    assert np.allclose(line, [exact(a, 0) for a in coords], rtol=1e-12)
    assert np.allclose(plane, [[exact(a, b) for a in coords] for b in coords], rtol=1e-12)  # rows b, columns a


@pytest.mark.parametrize("hessian, fraction", [(A, 0.0), (-A, 1.0), (torch.diag(torch.tensor([1.0, -1.0, 1.0])), None)])
def test_the_plane_s_curvatures_are_the_hessian_restricted_to_the_plane(hessian, fraction):
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    h = hessian.double()
    theta, d1, d2 = {"w": torch.zeros(1, 3, dtype=torch.float64)}, {"w": u.view(1, 3)}, {"w": v.view(1, 3)}
    coords = surface.coordinates(1.0, 7)
    plane = surface.plane(quadratic(h), theta, d1, d2, coords)
    restricted = torch.stack([torch.stack([u @ h @ u, u @ h @ v]), torch.stack([v @ h @ u, v @ h @ v])])
    expected = np.sort(np.linalg.eigvalsh(restricted.numpy()))
    lam = surface.curvatures(plane, coords[1] - coords[0])
    assert np.allclose(lam, np.broadcast_to(expected, lam.shape), rtol=1e-9)  # central differences: exact
    if fraction is None:  # a saddle: negative curvature in the plane exactly where the restricted Hessian has it
        fraction = float(expected[0] < -surface.RATIO * abs(expected[1]))
    assert surface.nonconvex_fraction(plane, coords[1] - coords[0]) == fraction


def test_a_surface_that_is_not_finite_has_no_non_convex_fraction():
    plane = np.ones((5, 5))
    plane[2, 2] = np.inf
    assert surface.nonconvex_fraction(plane, 0.5) is None


ARCHITECTURE = {"variant": "residual_bn", "depth": 8, "num_classes": 10, "in_channels": 1}


def saved_cell(runs, name, variant, diverged=False):
    folder = runs / name
    folder.mkdir(parents=True)
    architecture = {**ARCHITECTURE, "variant": variant}
    model = models.build_model(**architecture)
    data = {"classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.2]}
    sha = weights.save(folder, model, architecture, data, "k" * 16)
    (folder / "metrics.json").write_text(json.dumps({"weights_sha256": sha, "diverged": diverged}))


def test_bench_landscape_draws_each_cell_and_records_a_diverged_one(tmp_path, params, digits_dir):
    p = params(
        "grid.depths=[8]", "grid.seeds=[0,1]", "landscape.seeds=[0,1]", "landscape.resolution=5", "landscape.subset=32"
    )
    runs = tmp_path / "runs"
    for variant in p.landscape.variants:
        saved_cell(runs, f"{variant}-8-0", variant)
        saved_cell(runs, f"{variant}-8-1", variant, diverged=variant == "plain_bn")
    s = landscape(p, runs, digits_dir, tmp_path / "out", tmp_path / "directions")
    cells = s["cells"]
    assert cells["plain_bn-8-1"] == {"variant": "plain_bn", "depth": 8, "seed": 1, "diverged": True}
    drawn = cells["residual_bn-8-0"]
    assert len(drawn["loss_1d"]) == 5
    assert np.array(drawn["loss_2d"]).shape == (5, 5)
    assert drawn["loss_2d"][2][2] == pytest.approx(drawn["loss_at_weights"], rel=1e-5)  # the centre: the weights
    assert drawn["loss_1d"][2] == pytest.approx(drawn["loss_at_weights"], rel=1e-5)
    assert 0 <= drawn["nonconvex_fraction"] <= 1
    assert (tmp_path / "out/landscape.png").stat().st_size > 0
    assert json.loads((tmp_path / "out/landscape.json").read_text())["cells"] == cells
    assert sorted(f.name for f in (tmp_path / "directions").iterdir()) == [
        "plain_bn-8-0.safetensors",
        "residual_bn-8-0.safetensors",
        "residual_bn-8-1.safetensors",
    ]


def test_an_experiment_that_shrinks_the_grid_draws_what_is_left_and_says_what_not(tmp_path, params, digits_dir):
    p = params("grid.depths=[8]", "grid.seeds=[0]", "grid.variants=[plain,residual_bn]", "landscape.seeds=[0,1]")
    saved_cell(tmp_path / "runs", "residual_bn-8-0", "residual_bn")
    s = landscape(p, tmp_path / "runs", digits_dir, tmp_path / "out", tmp_path / "d")
    assert list(s["cells"]) == ["residual_bn-8-0"]
    assert s["not_drawn"] == ["variant plain_bn is not in grid.variants", "seed 1 is not in grid.seeds"]
    p = params("grid.depths=[8]", "grid.seeds=[0]", "landscape.seeds=[1]")  # nothing left: a figure that says so
    s = landscape(p, tmp_path / "runs", digits_dir, tmp_path / "none", tmp_path / "d")
    assert s["cells"] == {}
    assert (tmp_path / "none/landscape.png").stat().st_size > 0


def test_bench_landscape_refuses_a_cell_it_cannot_draw_before_any_work(tmp_path, params, digits_dir):
    p = params("grid.depths=[8]", "grid.seeds=[0]", "landscape.seeds=[0]")
    saved_cell(tmp_path / "runs", "plain_bn-8-0", "plain_bn")
    with pytest.raises(ValueError, match="residual_bn-8-0 has no metrics.json: train it first"):
        landscape(p, tmp_path / "runs", digits_dir, tmp_path / "out", tmp_path / "d")
    assert not (tmp_path / "out").exists()


def summary_of(fractions: dict) -> dict:
    """A landscape.json as the stage writes it, with these non-convex fractions per (variant, depth)."""
    cells = {
        f"{v}-{d}-{s}": {"variant": v, "depth": d, "seed": s, "diverged": False, "nonconvex_fraction": x}
        for (v, d), xs in fractions.items()
        for s, x in enumerate(xs)
    }
    params = {"resolution": 9, "span": 1.0, "subset": 128, "seed": 0, "ratio": 0.1}
    return {"params": params, "cells": cells, "not_drawn": []}


def test_the_claim_compares_the_non_convex_fractions_over_seeds():
    apart = summary_of({("plain_bn", 56): [0.8, 0.82, 0.84], ("residual_bn", 56): [0.3, 0.35, 0.4]})
    (c,) = report_landscape.claims(apart, 56)
    assert c["holds"] is True
    assert c["statistic"]["estimate"] == pytest.approx(0.47)
    assert c["n"] == {"plain_bn-56": 3, "residual_bn-56": 3}
    (c,) = report_landscape.claims(
        summary_of({("plain_bn", 56): [0.3, 0.35, 0.4], ("residual_bn", 56): [0.8, 0.82, 0.84]}), 56
    )
    assert c["holds"] is False
    (c,) = report_landscape.claims(summary_of({("plain_bn", 56): [0.8], ("residual_bn", 56): [0.3]}), 56)
    assert c["holds"] == "not shown"
    assert "fewer than 2 seeds" in c["why"]
    (c,) = report_landscape.claims(None, 56)
    assert c["why"] == "the landscape stage did not run"


def test_the_report_section_tables_the_mean_non_convex_fraction_and_links_the_figure():
    s = summary_of({("plain_bn", 8): [0.1, 0.3], ("residual_bn", 8): [0.0, 0.0]})
    s["cells"]["residual_bn-8-1"] = {"variant": "residual_bn", "depth": 8, "seed": 1, "diverged": True}
    text = report_landscape.section(s, "landscape", ["plain", "plain_bn", "residual_bn"], [8])
    assert "| plain_bn | 0.20 (n = 2) |" in text
    assert "| residual_bn | 0.00 (n = 1) |" in text  # the diverged seed has no surface
    assert "| plain |" not in text  # not drawn
    assert "![loss landscapes](landscape/landscape.png)" in text
    assert "Not drawn" not in text
    s["not_drawn"] = ["seed 2 is not in grid.seeds"]
    assert "\n\nNot drawn: seed 2 is not in grid.seeds.\n" in report_landscape.section(
        s, "landscape", ["plain_bn"], [8]
    )
    assert report_landscape.section(None, "landscape", ["plain_bn"], [8]) == ""
