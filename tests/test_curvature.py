"""bench/curvature/: the Hessian's largest eigenvalue and Hutchinson's trace against the explicit Hessian, the
initial weights rebuilt as the train stage built them, `bench curvature` on saved cells, and the report's section
and claim (Yao et al. 2020)."""

import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from test_landscape import saved_cell
from torch import nn
from torch.func import functional_call

from bench import trained
from bench.curvature.hessian import Hessian, hutchinson_trace, top_eigenvalue
from bench.curvature.stage import both_ends, curvature
from bench.record import Cell
from bench.report import curvature as report_curvature
from bench.train.data import load_prepared
from bench.train.stage import build


def tiny():
    """A small net, its loss on a fixed batch, and the explicit Hessian of that loss over every parameter."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]

    def flat_loss(theta):
        pieces = torch.split(theta, [p.numel() for p in params])
        return F.cross_entropy(functional_call(net, {n: t.view_as(p) for n, t, p in zip(names, pieces, params)}, x), y)

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    explicit = torch.autograd.functional.hessian(flat_loss, theta).double()
    return Hessian(lambda: F.cross_entropy(net(x), y), params), explicit


def test_lambda_max_is_the_explicit_hessian_s_largest_eigenvalue():
    h, explicit = tiny()
    assert top_eigenvalue(h, seed=0) == pytest.approx(torch.linalg.eigvalsh(explicit)[-1].item(), rel=1e-4)


def test_each_product_is_the_explicit_hessian_times_the_vector():
    h, explicit = tiny()
    v = torch.randn(h.size, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(h.product(v).double(), explicit @ v.double(), rtol=1e-4, atol=1e-6)


def test_hutchinson_s_trace_is_within_its_error_of_the_explicit_trace():
    h, explicit = tiny()
    estimate, error = hutchinson_trace(h, samples=100, seed=0)
    assert error > 0
    assert abs(estimate - explicit.trace().item()) < 4 * error


def test_on_a_diagonal_hessian_hutchinson_is_exact_with_one_vector():
    """v^T H v = sum_i H_ii v_i^2 = tr(H) for every Rademacher v when H is diagonal; lambda_max is its largest entry."""
    w = nn.Parameter(torch.ones(4))
    diagonal = torch.tensor([3.0, -1.0, 0.5, 2.0])
    h = Hessian(lambda: 0.5 * (diagonal * w**2).sum(), [w])
    assert hutchinson_trace(h, samples=1, seed=0) == (pytest.approx(4.5), 0.0)
    assert top_eigenvalue(h, seed=0) == pytest.approx(3.0, rel=1e-6)


def test_the_same_seed_gives_the_same_numbers():
    h, _ = tiny()
    assert hutchinson_trace(h, 8, seed=3) == hutchinson_trace(h, 8, seed=3)
    assert hutchinson_trace(h, 8, seed=3) != hutchinson_trace(h, 8, seed=4)
    assert top_eigenvalue(h, seed=3) == top_eigenvalue(h, seed=3)


@pytest.mark.parametrize("variant", ["plain", "plain_bn", "residual", "residual_bn", "residual_fixup"])
def test_the_initial_weights_are_those_the_train_stage_starts_from(params, digits_dir, variant):
    p = params()
    module, _ = build(p, Cell(variant, 8, 3), load_prepared(digits_dir, p.data))
    batch = trained.subset(p, digits_dir, "curvature")
    rebuilt = trained.initial(p, Cell(variant, 8, 3), batch).state_dict()
    started = module.model.state_dict()
    assert rebuilt.keys() == started.keys()
    for k in started:
        assert torch.equal(rebuilt[k], started[k]), k


def test_bench_curvature_measuresboth_ends_and_only_the_start_of_a_diverged_cell(tmp_path, params, digits_dir):
    p = params(
        "grid.depths=[8]",
        "grid.seeds=[0,1]",
        "grid.variants=[residual,residual_bn]",
        "curvature.seeds=[0,1]",
        "curvature.subset=16",
        "curvature.samples=2",
    )
    runs = tmp_path / "runs"
    for variant in p.grid.variants:
        saved_cell(runs, f"{variant}-8-0", variant)
        saved_cell(runs, f"{variant}-8-1", variant, diverged=variant == "residual")
    s = curvature(p, runs, digits_dir, tmp_path / "out")
    dead, alive = s["cells"]["residual-8-1"], s["cells"]["residual_bn-8-0"]
    assert dead["diverged"] is True
    assert "end" not in dead
    assert dead["init"]["lambda_max"] > 0  # the seed's initial weights, measured all the same
    for when in ("init", "end"):
        assert alive[when]["lambda_max"] > 0, when
        assert alive[when]["trace_se"] >= 0, when
    assert s["not_measured"] == ["variant residual_fixup is not in grid.variants"]
    assert json.loads((tmp_path / "out/curvature.json").read_text())["cells"] == s["cells"]
    assert (tmp_path / "out/curvature.png").stat().st_size > 0


def test_bench_curvature_refuses_a_subset_larger_than_the_training_split_before_any_work(tmp_path, params, digits_dir):
    p = params("grid.depths=[8]", "grid.seeds=[0]", "curvature.seeds=[0]", "curvature.subset=100000")
    for variant in p.curvature.variants:
        saved_cell(tmp_path / "runs", f"{variant}-8-0", variant)
    with pytest.raises(ValueError, match=r"curvature.subset=100000, but the training split holds \d+ images"):
        curvature(p, tmp_path / "runs", digits_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def summary_of(end: dict) -> dict:
    """A curvature.json with these final lambda_max per (variant, depth), a seed each (None: diverged)."""
    cells = {}
    for (v, d), xs in end.items():
        for s, x in enumerate(xs):
            r = {"variant": v, "depth": d, "seed": s, "diverged": x is None, "init": {"lambda_max": 1.0}}
            cells[f"{v}-{d}-{s}"] = r if x is None else r | {"end": {"lambda_max": x}}
    return {"params": {"subset": 32, "samples": 8, "seed": 0}, "cells": cells, "not_measured": []}


def test_the_claim_compares_bn_s_effect_on_lambda_max_between_depths():
    grows = summary_of(
        {
            ("residual", 8): [10.0, 12.0, 11.0],
            ("residual_bn", 8): [10.0, 11.0, 12.0],
            ("residual", 56): [1000.0, 900.0, 1100.0],
            ("residual_bn", 56): [10.0, 10.0, 11.0],
        }
    )
    (c,) = report_curvature.claims(grows, 8, 56)
    assert c["holds"] is True
    expected = (math.log10(100) + math.log10(90) + math.log10(100)) / 3 - (
        0 + math.log10(12 / 11) + math.log10(11 / 12)
    ) / 3
    assert c["statistic"]["estimate"] == pytest.approx(expected)
    shrinks = summary_of(
        {
            ("residual", 8): [1000.0, 900.0, 1100.0],
            ("residual_bn", 8): [10.0, 10.0, 11.0],
            ("residual", 56): [10.0, 12.0, 11.0],
            ("residual_bn", 56): [10.0, 11.0, 12.0],
        }
    )
    assert report_curvature.claims(shrinks, 8, 56)[0]["holds"] is False
    dead = summary_of({("residual", 8): [1.0, 2.0], ("residual_bn", 8): [1.0, 1.0], ("residual", 56): [None, None]})
    (c,) = report_curvature.claims(dead, 8, 56)
    assert c["holds"] == "not shown"
    assert c["why"] == "2 of 2 seeds of residual-56 diverged: no final lambda_max without BN to compare"
    assert report_curvature.claims(None, 8, 56)[0]["why"] == "the curvature stage did not run"


def test_the_report_section_tables_lambda_max_from_start_to_end_and_links_the_figure():
    s = summary_of({("residual", 8): [5.0, None], ("residual_bn", 8): [2.0, 4.0]})
    text = report_curvature.section(s, "curvature", ["residual", "residual_bn", "plain"], [8])
    assert "| residual | 1 -> 5 (1 diverged) |" in text
    assert "| residual_bn | 1 -> 3 |" in text  # the median of 2.0 and 4.0
    assert "| plain |" not in text
    assert "![curvature](curvature/curvature.png)" in text
    assert report_curvature.section(None, "curvature", ["residual"], [8]) == ""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_study_stage_says_each_cell_in_order_and_records_the_same_whatever_the_workers(
    tmp_path, params, digits_dir, capsys, workers
):
    p = params("grid.depths=[8]", "grid.variants=[residual_bn]", "curvature.subset=16", "curvature.samples=2")
    runs = tmp_path / "runs"
    saved_cell(runs, "residual_bn-8-0", "residual_bn")
    saved_cell(runs, "residual_bn-56-0", "residual_bn", diverged=True)  # no weights to load: measured at init only
    saved_cell(runs, "residual_bn-8-1", "residual_bn")
    found = trained.loaded(runs, [Cell("residual_bn", 8, 0), Cell("residual_bn", 56, 0), Cell("residual_bn", 8, 1)])
    measure = partial(both_ends, p, trained.subset(p, digits_dir, "curvature"))
    results = trained.measure_each(runs, found, measure, "curvature", workers=workers)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "curvature 1/3: residual_bn-8-0",
        "curvature 2/3: residual_bn-56-0",
        "curvature 3/3: residual_bn-8-1",
    ]
    assert all(line.endswith(" s)") for line in lines)
    assert results["residual_bn-56-0"]["diverged"] is True and "end" not in results["residual_bn-56-0"]
    alone = trained.measure_each(runs, found, measure, "curvature", workers=1)
    assert {k: {**r, "seconds": 0} for k, r in results.items()} == {k: {**r, "seconds": 0} for k, r in alone.items()}
    assert results["residual_bn-8-0"]["end"] != results["residual_bn-8-1"]["end"]  # each cell its own weights


def test_a_study_stage_says_a_cell_with_nothing_to_measure(tmp_path, capsys):
    saved_cell(tmp_path, "residual-8-0", "residual", diverged=True)
    found = trained.loaded(tmp_path, [Cell("residual", 8, 0)])
    results = trained.measure_each(tmp_path, found, nothing, "paths")
    assert results["residual-8-0"] == {"variant": "residual", "depth": 8, "seed": 0, "diverged": True}
    assert capsys.readouterr().out == "paths 1/1: residual-8-0 (nothing to measure)\n"


def nothing(c, cell):
    return None
