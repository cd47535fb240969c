"""The report's statistics and honesty: Wilson intervals, the noise band, diverged cells as NaN, cells at chance,
and He et al. 2016 compared like for like. Hand-made cells with every key bench.record writes."""

import csv
import json

import pytest
from helpers import PARAMS

from bench import config
from bench.report.noise import at_chance
from bench.report.stage import aggregate, fmt_cell, report
from bench.report.stats import difference_noise, wilson, within_noise

CIFAR_TEST = 10_000


def metrics(variant, depth, seed, test, train=0.01, diverged=False, dataset="cifar10", test_images=CIFAR_TEST):
    """A cell's metrics.json as bench.record.metrics writes it (the keys the report reads)."""
    return {
        "variant": variant,
        "depth": depth,
        "seed": seed,
        "dataset": dataset,
        "num_classes": 10,
        "train_images": 50_000,
        "test_images": test_images,
        "test/error": None if diverged else test,
        "train/error": None if diverged else train,
        "diverged": diverged,
        "diverged_step": 300 if diverged else None,
    }


def write_cell(runs, m, steps=(100, 200, 300, 400)):
    d = runs / f"{m['variant']}-{m['depth']}-{m['seed']}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))
    with open(d / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "lr", "train/loss", "train/error", "test/loss", "test/error"])
        for i, s in enumerate(steps):
            end = (i + 1) / len(steps)  # from chance towards the final error
            bad = m["diverged"] and s >= m["diverged_step"]
            train = 0.9 + end * ((m["train/error"] or 0.9) - 0.9)
            test = 0.9 + end * ((m["test/error"] or 0.9) - 0.9)
            w.writerow(
                [i, s, 0.1, "nan" if bad else 1, "nan" if bad else train, "nan" if bad else 1, "nan" if bad else test]
            )


# plain: 20 trains, 56 is at chance with one seed diverged, 110 diverges; residual_bn near He et al.
GRID = {
    ("plain", 20): [0.090, 0.094, 0.092],
    ("plain", 56): [0.899, 0.900, None],
    ("plain", 110): [None] * 3,
    ("residual_bn", 20): [0.084, 0.086, 0.088],
    ("residual_bn", 56): [0.069, 0.071, 0.070],
    ("residual_bn", 110): [0.0695, 0.0700, 0.0705],
}


def write_grid(runs, dataset="cifar10"):
    for (v, d), tests in GRID.items():
        for s, t in enumerate(tests):
            train = 0.899 if v == "plain" and d == 56 else 0.01
            write_cell(runs, metrics(v, d, s, t, train, diverged=t is None, dataset=dataset))


def make_report(tmp_path, *overrides, dataset="cifar10"):
    params = config.load(
        PARAMS, ["grid.variants=[plain, residual_bn]", "grid.depths=[20, 56, 110]", "grid.seeds=[0, 1, 2]", *overrides]
    )
    write_grid(tmp_path / "runs", dataset)
    summary = report(params, tmp_path / "runs", tmp_path / "report")
    return summary, (tmp_path / "report/report.md").read_text()


def row(md, depth):
    return next(line for line in md.splitlines() if line.startswith(f"| {depth} |"))


def test_wilson_interval_against_hand_computed_values():
    # z = 1.959964, z² = 3.841459. 0 of 360: [0, z²/(n + z²)] = [0, 3.841459 / 363.841459]
    assert wilson(0, 360) == pytest.approx((0.0, 0.0105581), abs=1e-7)
    # 10 of 360: centre (10 + 1.920729) / 363.841459 = 0.0327637; half z sqrt(10 * 350 / 360 + 0.960365) / 363.841459
    # = 1.959964 * 3.268423 / 363.841459 = 0.0176065
    assert wilson(10, 360) == pytest.approx((0.0151572, 0.0503702), abs=1e-6)
    lo, hi = wilson(350, 360)
    assert (1 - hi, 1 - lo) == pytest.approx(wilson(10, 360))  # errors and successes swap
    with pytest.raises(ValueError):
        wilson(5, 0)


def test_noise_band_of_a_difference_against_hand_computed_values():
    a = {"mean": 0.070, "std": 0.002, "n": 3, "test_images": CIFAR_TEST}
    b = {"mean": 0.072, "std": 0.003, "n": 3, "test_images": CIFAR_TEST}
    # 1.959964 sqrt(0.002²/3 + 0.003²/3 + 0.07 * 0.93 / 1e4 + 0.072 * 0.928 / 1e4) = 1.959964 * 0.0041863
    assert difference_noise(a, b) == pytest.approx(0.0082050, abs=1e-6)
    assert within_noise(a, b) == pytest.approx((-0.002, 0.0082050), abs=1e-6)
    assert within_noise(a, {**b, "mean": 0.09}) is None  # 2 points apart: outside the band
    one_seed = {"mean": 0.07, "std": None, "n": 1, "test_images": None}
    assert difference_noise(one_seed, one_seed) is None  # neither seed spread nor test set size: unmeasured


def test_a_cell_at_chance_is_flagged():
    assert at_chance(metrics("plain", 56, 0, 0.9, train=0.81))  # 0.9 x chance error (90 %)
    assert not at_chance(metrics("plain", 56, 0, 0.9, train=0.80))
    assert not at_chance(metrics("plain", 56, 0, None, diverged=True))
    old = metrics("plain", 56, 0, 0.9, train=0.9)
    del old["num_classes"]  # recorded before the field existed: chance unknown, nothing flagged
    assert not at_chance(old)


def test_mean_over_non_diverged_seeds_and_the_diverged_fraction():
    results = [metrics("plain", 20, s, t, diverged=t is None) for s, t in enumerate([0.10, 0.12, None])]
    results += [metrics("plain", 56, s, None, diverged=True) for s in range(3)]
    results += [metrics("plain", 110, s, 0.9, train=0.9) for s in range(2)]
    agg = aggregate([{**m, "gap": None if m["diverged"] else m["test/error"] - m["train/error"]} for m in results])
    assert fmt_cell(agg["plain", 20]) == "11.00 ± 1.41 (n=2; 1/3 diverged)"
    assert fmt_cell(agg["plain", 56]) == "diverged (3/3)"
    assert fmt_cell(agg["plain", 110]) == "90.00 ± 0.00 (n=2; at chance / untrained)"


def test_report_diverged_cells_are_nan_in_every_csv(tmp_path):
    make_report(tmp_path)
    for name in ("error_vs_depth.csv", "gap_vs_depth.csv"):
        text = (tmp_path / "report" / name).read_text()
        rows = list(csv.DictReader(text.splitlines()))
        assert rows[2]["depth"] == "110" and rows[2]["plain"] == "NaN", name
        assert ",," not in text and not any(line.endswith(",") for line in text.splitlines()), name
    rows = list(csv.DictReader(open(tmp_path / "report/error_vs_depth.csv")))
    assert float(rows[1]["residual_bn"]) == pytest.approx(7.0)


def test_report_statistics_chance_and_intervals(tmp_path):
    summary, md = make_report(tmp_path)
    assert "diverged (3/3)" in row(md, 110)
    assert "89.95 ± 0.07 (n=2; 1/3 diverged; at chance / untrained)" in row(md, 56)
    # Wilson, 8990 of 10,000: (8990 + 1.920729) / 10003.841459 ± 1.959964 sqrt(8990 * 1010 / 1e4 + 0.960365) /
    # 10003.841459 = 0.898843 ± 0.005907
    assert "| plain-56 | 89.90 [89.29, 90.48] at chance |" in md
    assert "Two results differ by less than the noise when" in md
    assert "- residual_bn: depth 56 vs 110: Δ +0.00, noise ±" in md  # 7.00 vs 7.00
    assert summary["test/error/residual_bn-110"] == pytest.approx(0.07)
    assert summary["test/error_std/residual_bn-110"] == pytest.approx(0.0005)
    assert summary["diverged_fraction/plain-56"] == pytest.approx(1 / 3)
    assert summary["test/error/plain-110"] is None and summary["diverged_fraction/plain-110"] == 1
    for figure in ("convergence", "error_vs_depth", "gap_vs_depth"):
        assert (tmp_path / f"report/figures/{figure}.png").stat().st_size > 0


def test_he_reference_like_for_like(tmp_path):
    _, md = make_report(tmp_path, "model.shortcut=zero_pad")
    assert "6.61 ± 0.16 (mean of 5 runs; best 6.43)" in row(md, 110)  # a mean over seeds beside a mean of runs
    assert "8.75 (single run)" in row(md, 20) and "6.97 (single run)" in row(md, 56)
    # residual_bn-110: 7.00 against 6.61 ± 0.16 over 5 runs; noise, in points,
    # 1.96 sqrt(0.05²/3 + 0.16²/5 + 7 * 93 / 1e4 + 6.61 * 93.39 / 1e4) = 1.96 * sqrt(13.278) / 10 = 0.71
    assert "| 110 | 7.00 ± 0.05 (n=3) | 6.61 ± 0.16 (mean of 5 runs; best 6.43) | +0.39 | 0.71 | yes |" in md
    # the option, training-set size and seeds are stated for CIFAR-10 too; option A: no warning
    assert "this grid used option A (zero padding, no parameters; `model.shortcut: zero_pad`)" in md
    assert "45k/5k train/val split" in md and "trained on 50000 images" in md and "Seeds: 3 per cell" in md
    assert "Warning" not in md and "context, not a comparison" not in md


def test_projection_shortcuts_are_warned_about(tmp_path):
    _, md = make_report(tmp_path, "model.shortcut=projection")
    assert "**Warning:** this grid used projection shortcuts (option B)" in md


def test_another_dataset_gets_the_reference_as_context(tmp_path):
    _, md = make_report(tmp_path, "model.shortcut=zero_pad", dataset="cifar100")
    assert "context, not a comparison" in md and "Like for like: He et al." in md
    assert "### Like for like with He et al." not in md  # no Δ against CIFAR-10 numbers


def test_figures_label_every_axis_use_log2_depth_and_ring_cells_at_chance(tmp_path, monkeypatch):
    from bench.report import figures as report_figures

    figures = {}
    monkeypatch.setattr(report_figures, "save", lambda fig, path: figures.__setitem__(path.name, fig))
    make_report(tmp_path)
    for name in ("convergence.png", "error_vs_depth.png", "gap_vs_depth.png"):
        for ax in (ax for ax in figures[name].axes if ax.get_visible()):
            assert ax.get_xlabel() and (ax.get_ylabel() or name == "convergence.png"), name  # rows share a y label
    for ax in figures["error_vs_depth.png"].axes + figures["gap_vs_depth.png"].axes:
        assert ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["20", "56", "110"]
    error_axis = figures["error_vs_depth.png"].axes[1]
    assert error_axis.get_ylim()[1] <= 100 and any(line.get_label().startswith("chance") for line in error_axis.lines)
    gap = figures["gap_vs_depth.png"].axes[0]
    assert [line.get_label() for line in gap.lines].count("at chance / untrained") == 1
    import matplotlib.pyplot as plt

    plt.close("all")  # the stand-in for save kept them open


def test_diagnostics_table_entries_say_why_a_value_is_missing_and_bn_note_when_scales_stayed_near_one():
    from bench.report.pathologies import _entry, bn_note

    ms = [
        {"init/grad_ratio": None, "init/grad_saturated": True},
        {"init/grad_ratio": 2.0, "init/grad_saturated": False},
    ]
    assert _entry(ms, "init/grad_ratio", False) == "2 (1/2 saturated)"
    chance = [{"end/lesion_at_chance": True, "end/lesion_mean_increase": 0.0}] * 2
    assert _entry(chance, "end/lesion_mean_increase", True) == "at chance: untrained"  # not "0.0": not robust
    assert _entry([{"end/bn_scale_change": None}], "end/bn_scale_change", False) == "–"  # no BN: not applicable
    assert _entry([{"x": 0.1}, {"x": 0.3}], "x", True) == "20 ± 14"
    assert "too little" in bn_note([{"end/bn_scale_change": 0.01}, {"end/bn_scale_change": 0.02}])
    assert bn_note([{"end/bn_scale_change": 0.3}]) == ""
