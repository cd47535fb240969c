"""The report and the record it reads: a cell's metrics.json as a typed record and back, byte for byte; the one loader
of a cell's folder; the report's statistics and honesty (Wilson intervals, the noise band, diverged cells as NaN,
cells at chance, He et al. 2016 compared like for like), its figures and its folder swapped in whole. Hand-made
cells hold every file and key bench.train writes."""

import csv
import json
import shutil

import pytest
from helpers import GRID_PARAMS, PARAMS, ROOT, metrics, snapshot, write_cell, write_grid

from bench import config, record
from bench.record import Cell, Metrics
from bench.report import stage
from bench.report.grid import aggregate, depth_csv, fmt_cell, only, preact_like_for_like
from bench.report.grid import summary as grid_summary
from bench.report.markdown import plus_minus, table
from bench.report.noise import at_chance
from bench.report.pathologies import bn_note, entry
from bench.report.render import document
from bench.report.stage import report
from bench.report.stats import Z95, difference_noise, t95, t_interval, wilson, within_noise

CIFAR_TEST = 10_000
COMMITTED = ROOT / "runs"
COMMITTED_CELLS = sorted(p.parent.name for p in COMMITTED.glob("*/metrics.json"))


def make_report(tmp_path, *overrides, dataset="cifar10"):
    params = config.load(PARAMS, [*GRID_PARAMS, *overrides])
    write_grid(tmp_path / "runs", dataset)
    summary = report(params, tmp_path / "runs", tmp_path / "report")
    return summary, (tmp_path / "report/report.md").read_text()


def render_text(tmp_path, *overrides, dataset="cifar10"):
    """report.md's text through the pure steps (load, aggregate, render), without drawing the figures."""
    params = config.load(PARAMS, [*GRID_PARAMS, *overrides])
    write_grid(tmp_path / "runs", dataset, overrides)
    results = stage.collect(params, tmp_path / "runs")
    metrics = [r.metrics for r in results]
    chance = record.chance_error(only(m.num_classes for m in metrics))
    return document(params, results, aggregate(metrics), chance, None, None)


@pytest.fixture
def default_report(hand_report):
    """The hand-made grid's report (conftest.py's hand_report: written once for the whole test run, with an lr
    sweep and a toy), for the tests that only read it: (folder, summary, report.md)."""
    return hand_report


def row(md, depth):
    return next(line for line in md.splitlines() if line.startswith(f"| {depth} |"))


# --- the record ---


def test_every_committed_metrics_json_round_trips_byte_for_byte():
    assert COMMITTED_CELLS  # the grid's committed results, which these tests read
    for cell in COMMITTED_CELLS:
        text = (COMMITTED / cell / "metrics.json").read_text()
        m = Metrics.from_json(json.loads(text))
        assert json.dumps(m.to_json(), indent=2) + "\n" == text, cell  # the key order too, not only the values


def test_a_hand_made_record_round_trips():
    for m in (metrics("plain", 20, 0, 0.1), metrics("plain", 56, 1, None, diverged=True)):
        assert Metrics.from_json(json.loads(json.dumps(m.to_json()))) == m, m.cell.name


def test_the_builder_writes_every_committed_metrics_json_again():
    """bench.record.metrics, given what training measured, gives the committed file: a retrained cell's metrics.json
    differs only where the machine does (wall time, throughput)."""
    for cell in COMMITTED_CELLS:
        m = Metrics.from_json(json.loads((COMMITTED / cell / "metrics.json").read_text()))
        nan = float("nan")
        built = record.metrics(
            m.cell,
            m.dataset,
            m.data_md5,
            m.num_classes,
            m.train_images,
            m.test_images,
            m.params,
            {k: nan if m.diverged else v for k, v in m.to_json().items() if k in record.SPLIT_KEYS},
            m.steps,
            m.epochs,
            m.wall_time_s,
            m.images_per_s if m.images_per_s is not None else nan,
            m.diverged_step,
            {k: nan if v is None else v for k, v in m.scalars.items()},  # NaN is written as null
            run_key=m.run_key,
            weights_sha256=m.weights_sha256,
        )
        assert built == m, cell


def test_from_json_names_a_missing_or_unknown_key():
    good = metrics("plain", 20, 0, 0.1).to_json()
    with pytest.raises(ValueError, match="field 'test/error' missing"):
        Metrics.from_json({k: v for k, v in good.items() if k != "test/error"})
    with pytest.raises(ValueError, match="field 'best/error' unknown"):
        Metrics.from_json(good | {"best/error": 0.05})
    with pytest.raises(ValueError, match="JSON object"):
        Metrics.from_json([good])
    with pytest.raises(ValueError, match=r"field 'test/error' is '0.1', not float \| None in \[0, 1\]"):
        Metrics.from_json(good | {"test/error": "0.1"})
    assert Metrics.from_json(good | {"wall_time_s": 3}).wall_time_s == 3  # an int is a float


def test_the_record_s_gap_and_cell():
    m = metrics("plain", 20, 1, test=0.10, train=0.04)
    assert m.gap == pytest.approx(0.06)
    assert m.cell == Cell("plain", 20, 1)
    assert metrics("plain", 20, 1, None, diverged=True).gap is None


def test_finite_is_the_one_nan_to_null():
    assert record.finite(float("nan")) is None
    assert record.finite(float("inf")) is None
    assert record.finite(None) is None
    assert record.finite(1) == 1.0


def test_the_loader_reads_a_cell_s_folder_once(tmp_path):
    m = metrics("plain", 20, 0, 0.1)
    write_cell(tmp_path, m)
    run = record.load(tmp_path, m.cell)
    assert run.metrics == m
    assert run.diagnostics["probe"]["size"] == 256
    assert run.env["precision"] == "32-true"
    assert run.history["step"] == [100.0, 200.0, 300.0, 400.0]
    assert run.cell == m.cell


def test_the_loader_reads_every_committed_cell():
    for cell in COMMITTED_CELLS:
        variant, depth, seed = cell.rsplit("-", 2)
        run = record.load(COMMITTED, Cell(variant, int(depth), int(seed)))
        assert run.env["cell"] == cell
        assert ("end" in run.diagnostics) != run.metrics.diverged, cell  # a diverged net is not measured at the end


def test_the_loader_names_the_cell_and_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="no results for cell plain-20-0"):
        record.load(tmp_path, Cell("plain", 20, 0))
    write_cell(tmp_path, metrics("plain", 20, 0, 0.1))
    (tmp_path / "plain-20-0/env.json").unlink()
    missing = r"\(FileNotFoundError: No such file or directory in \S*plain-20-0/env\.json\)"
    with pytest.raises(ValueError, match=rf"plain-20-0 is not a finished cell {missing}; rerun it \(dvc repro train@"):
        record.load(tmp_path, Cell("plain", 20, 0))
    write_cell(tmp_path, metrics("plain", 20, 3, 0.1))
    (tmp_path / "plain-20-3/metrics.json").write_text("{half written")
    with pytest.raises(ValueError, match="JSONDecodeError"):
        record.load(tmp_path, Cell("plain", 20, 3))


def rewrite(path, change):
    """Replace a hand-made cell's file by change(its text)."""
    path.write_text(change(path.read_text()))


def edit_json(change):
    """A rewrite of a JSON file: change(its object) in place, the result written back (NaN as the literal NaN)."""

    def edit(text):
        obj = json.loads(text)
        change(obj)
        return json.dumps(obj)

    return edit


BAD_FILES = {  # case: (the file of plain-20-0, how it is spoiled, the field the error must name; None: no field)
    "metrics without diverged": ("metrics.json", edit_json(lambda m: m.pop("diverged")), "'diverged'"),
    "metrics without depth": ("metrics.json", edit_json(lambda m: m.pop("depth")), "depth"),
    "metrics with a text test error": (
        "metrics.json",
        edit_json(lambda m: m.update({"test/error": "0.1"})),
        "'test/error'",
    ),
    "metrics with a NaN": ("metrics.json", edit_json(lambda m: m.update({"test/error": float("nan")})), "'test/error'"),
    "metrics with an error over 1": ("metrics.json", edit_json(lambda m: m.update({"val/error": 9.0})), "'val/error'"),
    "metrics with a NaN diagnostic": (
        "metrics.json",
        edit_json(lambda m: m.update({"init/shattering": float("nan")})),
        "'init/shattering'",
    ),
    "metrics with a fractional depth": ("metrics.json", edit_json(lambda m: m.update({"depth": 20.0})), "'depth'"),
    "metrics with a seed true": ("metrics.json", edit_json(lambda m: m.update({"seed": True})), "'seed'"),
    "metrics not JSON": ("metrics.json", lambda t: t[:20], None),
    "history without step": ("history.csv", lambda t: t.replace("epoch,step,", "epoch,stop,", 1), "'step'"),
    "history without a column": ("history.csv", lambda t: t.replace(",test/error", ",test/err", 1), "'test/error'"),
    "history empty": ("history.csv", lambda t: "", "'step'"),
    "history with a word": ("history.csv", lambda t: t.replace("\n2,300,0.1,", "\n2,300,fast,", 1), "'lr'"),
    "env empty": ("env.json", lambda t: "{}", "'versions'"),
    "env not JSON": ("env.json", lambda t: "{bad", None),
    "env a list": ("env.json", lambda t: "[]", None),
    "diagnostics not JSON": ("diagnostics.json", lambda t: t[:-1], None),
    "diagnostics empty": ("diagnostics.json", lambda t: "{}", "'probe'"),
    "predictions not safetensors": ("predictions.safetensors", lambda t: "junk", None),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_result_file_is_one_line_naming_it_and_the_report_stays(case, tmp_path, default_report, cli):
    """Each spoiled file of a cell: `bench report` exits 2 with one line naming the file and the field, and the
    previous report is left byte for byte."""
    name, spoil, field = BAD_FILES[case]
    folder = default_report[0]
    for sub in ("runs", "report"):
        shutil.copytree(folder / sub, tmp_path / sub)
    before = snapshot(tmp_path / "report")
    if name == "predictions.safetensors":
        (tmp_path / "runs/plain-20-0" / name).write_bytes(b"junk")
    else:
        rewrite(tmp_path / "runs/plain-20-0" / name, spoil)
    code, out, err = cli(
        "report",
        "--params",
        PARAMS,
        "--runs",
        tmp_path / "runs",
        "--out",
        tmp_path / "report",
        "--lr-sweep",
        folder / "sweep.json",
        "--toy",
        tmp_path / "report/toy",
        *GRID_PARAMS,
    )
    assert code == 2
    assert err.count("\n") == 1
    assert str(tmp_path / "runs/plain-20-0" / name) in err
    assert field is None or field in err
    assert "Traceback" not in err
    assert snapshot(tmp_path / "report") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]


def test_a_folder_holding_another_cell_s_metrics_is_refused_naming_both(tmp_path):
    write_cell(tmp_path, metrics("plain", 20, 1, 0.1))
    (tmp_path / "plain-20-1").rename(tmp_path / "plain-20-2")  # a folder copied or renamed by hand
    with pytest.raises(
        ValueError, match=r"plain-20-2/metrics\.json is cell plain-20-1's .*not its folder's plain-20-2"
    ):
        record.load(tmp_path, Cell("plain", 20, 2))


# --- the statistics ---


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


def test_intervals_over_seeds_use_t_with_n_minus_1_degrees_of_freedom():
    assert t95(2) == pytest.approx(4.302653, abs=1e-6)
    assert t95(1e9) == pytest.approx(Z95, abs=1e-6)
    # 3 seeds 0.03, 0.05, 0.07: mean 0.05, s = 0.02; half width 4.302653 * 0.02 / sqrt(3) = 0.0496828
    assert t_interval([0.03, 0.05, 0.07]) == pytest.approx((0.0003172, 0.0996828), abs=1e-7)
    assert t_interval([0.05]) is None  # one seed: no spread measured


def test_noise_band_of_a_difference_against_hand_computed_values():
    a = {"mean": 0.070, "std": 0.002, "n": 3, "test_images": CIFAR_TEST}
    b = {"mean": 0.072, "std": 0.003, "n": 3, "test_images": CIFAR_TEST}
    # t(0.975, 2) = 4.302653 (3 seeds); sqrt(0.002²/3 + 0.003²/3 + 0.07 * 0.93 / 1e4 + 0.072 * 0.928 / 1e4)
    # = 0.0041863; 4.302653 * 0.0041863 = 0.0180122
    assert difference_noise(a, b) == pytest.approx(0.0180122, abs=1e-6)
    assert within_noise(a, b) == pytest.approx((-0.002, 0.0180122), abs=1e-6)
    assert within_noise(a, {**b, "mean": 0.09}) is None  # 2 points apart: outside the band
    one_seed = {"mean": 0.07, "std": None, "n": 1, "test_images": None}
    assert difference_noise(one_seed, one_seed) is None  # neither seed spread nor test set size: unmeasured


def test_a_cell_at_chance_is_flagged():
    assert at_chance(metrics("plain", 56, 0, 0.9, train=0.81))  # 0.9 x chance error (90 %)
    assert not at_chance(metrics("plain", 56, 0, 0.9, train=0.80))
    assert not at_chance(metrics("plain", 56, 0, None, diverged=True))


def test_mean_over_non_diverged_seeds_and_the_diverged_fraction():
    results = [metrics("plain", 20, s, t, diverged=t is None) for s, t in enumerate([0.10, 0.12, None])]
    results += [metrics("plain", 56, s, None, diverged=True) for s in range(3)]
    results += [metrics("plain", 110, s, 0.9, train=0.9) for s in range(2)]
    agg = aggregate(results)
    assert fmt_cell(agg["plain", 20]) == "11.00 ± 1.41 (n=2: 10.00, 12.00; 1/3 diverged)"
    assert fmt_cell(agg["plain", 56]) == "diverged (3/3)"
    assert fmt_cell(agg["plain", 110]) == "90.00 ± 0.00 (n=2: 90.00, 90.00; at chance / untrained)"


def test_aggregation_mean_std_and_diverged_cells():
    results = [metrics("residual_bn", 20, s, t, train=0.1) for s, t in enumerate([0.08, 0.09, 0.10])]
    results += [metrics("plain", 20, 0, 0.3, train=0.1), metrics("plain", 20, 1, None, diverged=True, step=7)]
    results += [metrics("plain", 56, 0, None, diverged=True, step=7)]
    agg = aggregate(results)
    r = agg["residual_bn", 20]["test/error"]
    assert r["n"] == 3
    assert r["mean"] == pytest.approx(0.09)
    assert r["std"] == pytest.approx(0.01)  # the sample std
    assert fmt_cell(agg["residual_bn", 20]) == "9.00 ± 1.00 (n=3: 8.00, 9.00, 10.00)"  # and each seed
    assert agg["plain", 20]["diverged"] == 1
    assert fmt_cell(agg["plain", 20]) == "30.00 (n=1; 1/2 diverged)"
    assert fmt_cell(agg["plain", 56]) == "diverged (1/1)"
    assert agg["plain", 56]["diverged_steps"] == [7]
    assert agg["residual_bn", 20]["gap"]["mean"] == pytest.approx(-0.01)


def test_markdown_helpers():
    assert plus_minus(0.0912, 0.0041, scale=100) == "9.12 ± 0.41"
    assert plus_minus(0.0912, None, scale=100) == "9.12"  # one seed: no spread
    assert plus_minus(0.123456, 0.0123, ".3g", ".2g") == "0.123 ± 0.012"
    assert table(["a", "b"], [["1", ""]]) == "| a | b |\n|---|---|\n| 1 |  |"


# --- the report ---


def test_report_diverged_cells_are_nan_in_every_csv(default_report):
    tmp_path, _, _ = default_report
    for name in ("error_vs_depth.csv", "gap_vs_depth.csv"):
        text = (tmp_path / "report" / name).read_text()
        rows = list(csv.DictReader(text.splitlines()))
        assert rows[2]["depth"] == "110", name
        assert rows[2]["plain"] == "NaN", name
        assert ",," not in text, name
        assert not any(line.endswith(",") for line in text.splitlines()), name
    rows = list(csv.DictReader((tmp_path / "report/error_vs_depth.csv").read_text().splitlines()))
    assert float(rows[1]["residual_bn"]) == pytest.approx(7.0)


def test_report_statistics_chance_and_intervals(default_report):
    tmp_path, summary, md = default_report
    assert "diverged (3/3)" in row(md, 110)
    assert "89.95 ± 0.07 (n=2: 89.90, 90.00; 1/3 diverged; at chance / untrained)" in row(md, 56)
    # Wilson, 8990 of 10,000: (8990 + 1.920729) / 10003.841459 ± 1.959964 sqrt(8990 * 1010 / 1e4 + 0.960365) /
    # 10003.841459 = 0.898843 ± 0.005907
    assert "| plain-56 | 89.90 [89.29, 90.48] at chance |" in md
    assert "Two results differ by less than the noise when" in md
    assert "- residual_bn: depth 56 vs 110: Δ +0.00, noise ±" in md  # 7.00 vs 7.00
    assert summary["test/error"]["residual_bn"]["0110"] == pytest.approx(0.07)
    assert summary["test/error_std"]["residual_bn"]["0110"] == pytest.approx(0.0005)
    assert summary["diverged_fraction"]["plain"]["0056"] == pytest.approx(1 / 3)
    assert summary["test/error"]["plain"]["0110"] is None
    assert summary["diverged_fraction"]["plain"]["0110"] == 1
    assert json.loads((tmp_path / "report/metrics.json").read_text()) == summary
    for figure in ("convergence", "error_vs_depth", "gap_vs_depth", "shattering_vs_depth", "lesion"):
        assert (tmp_path / f"report/figures/{figure}.png").stat().st_size > 0, figure


def flat(obj, prefix=""):
    """A metrics file's keys as `dvc metrics show` names its columns (nested keys joined by dots), in file order."""
    if not isinstance(obj, dict):
        return [prefix]
    return [k for key, v in obj.items() for k in flat(v, f"{prefix}.{key}" if prefix else key)]


def test_the_report_s_metrics_read_by_measure_variant_and_depth(default_report):
    """`dvc metrics show` sorts the flattened keys as text: the file is in that order already, grouped by measure,
    then variant, and its depths (zero-padded) run 20, 56, 110, not 110, 20, 56."""
    folder, summary, _ = default_report
    text = (folder / "report/metrics.json").read_text()
    columns = flat(json.loads(text))
    assert columns == sorted(columns)
    assert columns[:5] == [
        "cells",
        "diverged",
        "diverged_fraction.plain.0020",
        "diverged_fraction.plain.0056",
        "diverged_fraction.plain.0110",
    ]
    assert "test/error.residual_bn.0110" in columns
    assert len(columns) == 2 + 3 * 6
    assert list(summary) == ["cells", "diverged", "diverged_fraction", "test/error", "test/error_std"]


def test_report_from_hand_made_cells_with_two_seeds(tmp_path):
    params = config.load(PARAMS, ["grid.variants=[plain, residual_bn]", "grid.depths=[20, 56]", "grid.seeds=[0, 1]"])
    runs = tmp_path / "runs"
    for v in ("plain", "residual_bn"):
        for d in (20, 56):
            for s in (0, 1):
                write_cell(runs, metrics(v, d, s, 0.1 + 0.01 * s, train=0.1, diverged=v == "plain" and d == 56))
    results = stage.collect(params, runs)  # the report's pure steps, without drawing its figures
    agg = aggregate([r.metrics for r in results])
    md = document(params, results, agg, record.chance_error(10), None, None)
    he = "| 56 | diverged (2/2) | 10.50 ± 0.71 (n=2: 10.00, 11.00) | 6.97 (single run) | 6.61 |"  # He et al., akamaster
    assert he in md
    summary = grid_summary([r.metrics for r in results], agg)
    assert summary["diverged"] == 2
    assert summary["test/error"]["residual_bn"]["0020"] == pytest.approx(0.105)
    rows = list(csv.DictReader(depth_csv(agg, [20, 56], record.TEST_ERROR).splitlines()))
    assert rows[1]["depth"] == "56"
    assert rows[1]["plain"] == "NaN"
    assert float(rows[1]["residual_bn"]) == pytest.approx(10.5)


def test_report_names_a_missing_cell_and_writes_nothing(tmp_path):
    params = config.load(PARAMS, ["grid.variants=[plain]", "grid.depths=[20]", "grid.seeds=[0]"])
    with pytest.raises(ValueError, match="no results for cell plain-20-0"):
        report(params, tmp_path / "runs", tmp_path / "report")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("where", ["runs/plain-20-0", "runs", "runs/new", "copy of plain-20-0"])
def test_an_out_in_the_cells_or_a_cell_s_folder_is_refused_before_any_work(where, tmp_path, default_report, cli):
    """`bench report --out` on a cell's folder would replace its metrics.json with the report's."""
    shutil.copytree(default_report[0] / "runs", tmp_path / "runs")
    shutil.copytree(tmp_path / "runs/plain-20-0", tmp_path / "copy of plain-20-0")
    before = snapshot(tmp_path)
    code, _, err = cli(
        "report", "--params", PARAMS, "--runs", tmp_path / "runs", "--out", tmp_path / where, *GRID_PARAMS
    )
    assert code == 2
    assert f"--out {tmp_path / where} is " in err
    assert "the report would overwrite its results" in err
    assert snapshot(tmp_path) == before


def test_a_cell_listed_twice_is_counted_once(tmp_path):
    """A grid that names a seed (or a variant, a depth) twice is one run of it, not n=3 ± 0.00."""
    from dataclasses import replace

    params = config.load(PARAMS, ["grid.variants=[plain]", "grid.depths=[20]", "grid.seeds=[0]"])
    twice = replace(params.grid, variants=["plain", "plain"], depths=[20, 20], seeds=[0, 0, 0])
    write_cell(tmp_path / "runs", metrics("plain", 20, 0, 0.1))
    summary = report(replace(params, grid=twice), tmp_path / "runs", tmp_path / "report")
    assert summary["cells"] == 1
    md = (tmp_path / "report/report.md").read_text()
    assert "| 20 | 10.00 (n=1) |" in md
    assert "n=3" not in md
    assert "| depth | plain |" in md
    assert "| depth | plain | plain |" not in md
    assert len(stage.collect(replace(params, grid=twice), tmp_path / "runs")) == 1
    assert aggregate([metrics("plain", 20, 0, 0.1)] * 3)["plain", 20]["seeds"] == 1


def test_a_pre_activation_resnet_110_is_set_beside_he_et_al_2016b_and_nothing_else_is():
    agg = aggregate(
        [metrics("residual_preact", d, s, e) for d in (20, 110) for s, e in enumerate([0.062, 0.064, 0.066])]
    )
    text = preact_like_for_like(agg, [20, 110])
    (line,) = [r for r in text.splitlines() if r.startswith("| 110 |")]
    assert "| 6.37 (median of 5) | +0.03 |" in line  # 6.40 - 6.37
    assert "| 20 |" not in text  # He et al. 2016b give no basic-block ResNet-20
    assert preact_like_for_like(aggregate([metrics("residual_bn", 110, 0, 0.07)]), [110]) == ""


def test_he_reference_like_for_like(tmp_path):
    md = render_text(tmp_path, "model.shortcut=zero_pad")
    assert "6.61 ± 0.16 (mean of 5 runs; best 6.43)" in row(md, 110)  # a mean over seeds beside a mean of runs
    assert "8.75 (single run)" in row(md, 20)
    assert "6.97 (single run)" in row(md, 56)
    # residual_bn-110: 7.00 against 6.61 ± 0.16 over 5 runs; noise, in points,
    # t(0.975, min(3, 5) - 1 = 2) sqrt(0.05²/3 + 0.16²/5 + 7 * 93 / 1e4 + 6.61 * 93.39 / 1e4)
    # = 4.302653 * sqrt(13.278) / 10 = 1.57
    assert (
        "| 110 | 7.00 ± 0.05 (n=3: 6.95, 7.00, 7.05) | 6.61 ± 0.16 (mean of 5 runs; best 6.43) | +0.39 | 1.57 | yes |"
        in md
    )
    # the option, training-set size and seeds are stated for CIFAR-10 too; option A: no warning
    assert "this grid used option A (zero padding, no parameters; `model.shortcut: zero_pad`)" in md
    assert "45k/5k train/val split" in md
    assert "trained on 50000 images" in md
    assert "Seeds: 3 per cell" in md
    assert "Warning" not in md
    assert "context, not a comparison" not in md


def test_projection_shortcuts_are_warned_about(tmp_path):
    md = render_text(tmp_path, "model.shortcut=projection")
    assert "**Warning:** this grid used projection shortcuts (option B)" in md


def test_another_dataset_gets_the_reference_as_context(tmp_path):
    md = render_text(tmp_path, "model.shortcut=zero_pad", dataset="cifar100")
    assert "context, not a comparison" in md
    assert "Like for like: He et al." in md
    assert "### Like for like with He et al." not in md  # no Δ against CIFAR-10 numbers


def test_the_sweep_and_the_toy_are_left_out_where_they_did_not_run(tmp_path):
    """(Where they ran: tests/test_html.py.)"""
    assert stage.read_toy(tmp_path / "no-toy") is None  # the toy stage did not draw its figure there
    md = render_text(tmp_path)  # no sweep, no toy
    assert "### BatchNorm and the learning rate" not in md
    assert "toy setting" not in md


def test_the_report_is_built_beside_and_swapped_in_whole(tmp_path, monkeypatch, default_report):
    """A report that fails while it is written leaves the previous one as it was, and nothing beside it."""
    folder, _, before = default_report
    for name in ("runs", "report"):
        shutil.copytree(folder / name, tmp_path / name)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(stage, "save", fail)  # the first file written: a figure
    params = config.load(PARAMS, GRID_PARAMS)
    with pytest.raises(OSError, match="disk full"):
        report(params, tmp_path / "runs", tmp_path / "report")
    assert (tmp_path / "report/report.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]


def test_figures_label_every_axis_use_log2_depth_and_ring_cells_at_chance(tmp_path):
    import matplotlib.pyplot as plt

    params = config.load(PARAMS, GRID_PARAMS)
    write_grid(tmp_path / "runs")
    results = stage.collect(params, tmp_path / "runs")
    agg = aggregate([r.metrics for r in results])
    figures = stage.figures(params, results, agg, 0.9, None)
    for name in ("convergence.png", "error_vs_depth.png", "gap_vs_depth.png"):
        for ax in (ax for ax in figures[name].axes if ax.get_visible()):
            assert ax.get_xlabel(), name
            assert ax.get_ylabel() or name == "convergence.png", name  # the convergence rows share a y label
    for ax in figures["error_vs_depth.png"].axes + figures["gap_vs_depth.png"].axes:
        assert ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["20", "56", "110"]
    error_axis = figures["error_vs_depth.png"].axes[1]
    assert error_axis.get_ylim()[1] <= 100
    assert any(line.get_label().startswith("chance") for line in error_axis.lines)
    gap = figures["gap_vs_depth.png"].axes[0]
    assert [line.get_label() for line in gap.lines].count("at chance / untrained") == 1
    for fig in figures.values():
        plt.close(fig)


def test_diagnostics_table_entries_say_why_a_value_is_missing_and_bn_note_when_scales_stayed_near_one():
    seeds = [
        {"init/grad_ratio": None, "init/grad_saturated": True},
        {"init/grad_ratio": 2.0, "init/grad_saturated": False},
    ]
    assert entry(seeds, "init/grad_ratio", False) == "2 (1/2 saturated)"
    chance = [{"end/lesion_at_chance": True, "end/lesion_mean_increase": 0.0}] * 2
    assert entry(chance, "end/lesion_mean_increase", True) == "at chance: untrained"  # not "0.0": not robust
    assert entry([{"end/bn_scale_change": None}], "end/bn_scale_change", False) == "–"  # no BN: not applicable
    assert entry([{"x": 0.1}, {"x": 0.3}], "x", True) == "20 ± 14"
    assert entry([{"x": 0.1}, {}], "x", False) == "0.1 (1/2 not measured)"  # a diverged seed has no "end/..."
    still = [metrics("plain_bn", 20, s, 0.1, scalars={"end/bn_scale_change": c}) for s, c in enumerate([0.01, 0.02])]
    assert "too little" in bn_note(still)
    assert bn_note([metrics("plain_bn", 20, 0, 0.1, scalars={"end/bn_scale_change": 0.3})]) == ""
    # decided per variant: a failed plain_bn cell that moved its scales far does not hide residual_bn's
    failed = metrics("plain_bn", 56, 0, 0.8, scalars={"end/bn_scale_change": 0.9})
    stayed = [metrics("residual_bn", 20, s, 0.1, scalars={"end/bn_scale_change": 0.02}) for s in range(2)]
    assert "residual_bn by 0.020" in bn_note([failed, *stayed])
    assert "plain_bn" not in bn_note([failed, *stayed])


def test_lesions_are_read_against_the_headroom_to_chance_and_per_stage(tmp_path):
    from bench.report.pathologies import lesion_share, lesion_stages

    m = metrics("residual_bn", 8, 0, 0.1, scalars={"end/intact_error": 0.1, "end/lesion_mean_increase": 0.4})
    write_cell(tmp_path, m)
    run = record.load(tmp_path, m.cell)
    assert lesion_share([run]) == "0.50"  # 0.4 of the 0.9 - 0.1 left to chance
    # helpers.diagnostics: lesion errors 0.5, 0.9, 0.4 (one block per stage) against an intact 0.1
    assert lesion_stages([run]) == "40.0 / 80.0 / 30.0"
    bad = metrics("plain_bn", 8, 0, 0.7, scalars={"end/intact_error": 0.7, "end/lesion_mean_increase": 0.1})
    write_cell(tmp_path, bad)
    assert lesion_share([record.load(tmp_path, bad.cell)]) == "0.50 (intact > 50 %)"


def test_the_toy_caption_is_computed_from_its_fitted_exponents():
    from bench.report.pathologies import toy_text

    steep = toy_text({"slope/residual": -1.1, "slope/plain": -1.8, "gradient_moment_slope/residual": 2.0})
    assert "grows as L^2.00 (faster than linearly), and the residual correlation falls faster than" in steep
    gentle = toy_text({"slope/residual": -0.3, "slope/plain": -1.8, "gradient_moment_slope/residual": 0.9})
    assert "(linearly or slower), and the residual correlation falls slower than" in gentle
    assert "Theorem 3" not in toy_text({})  # no numbers: no comparison


def test_cells_that_other_params_trained_are_refused_naming_a_param_that_differs(tmp_path):
    from bench.train import settings

    write_grid(tmp_path / "runs")  # trained under params.yaml's params
    settings.write(tmp_path / "runs/plain-20-0", config.load(PARAMS), Cell("plain", 20, 0))  # its config.yaml
    params = config.load(PARAMS, [*GRID_PARAMS, "train.lr=0.5"])
    lr = config.load(PARAMS).train.lr
    with pytest.raises(
        ValueError, match=rf"^18 of 18 cells .* \(plain-20-0, .*plain-20-0 ran with train.lr={lr} there, 0.5 here"
    ):
        report(params, tmp_path / "runs", tmp_path / "report")
    assert not (tmp_path / "report").exists()  # refused before anything is written
    assert report(config.load(PARAMS, GRID_PARAMS), tmp_path / "runs", tmp_path / "report")  # their own params


def test_cells_that_other_code_trained_are_refused(tmp_path, monkeypatch):
    from bench.report import fresh

    write_grid(tmp_path / "runs")
    params = config.load(PARAMS, GRID_PARAMS)
    assert not fresh.stale(params, [r.metrics for r in stage.collect(params, tmp_path / "runs")])
    monkeypatch.setattr(fresh, "code_hash", lambda module: "the train stage edited since")
    with pytest.raises(ValueError, match=r"18 of 18 cells .*: the train stage's code or the data\. .*stale"):
        report(params, tmp_path / "runs", tmp_path / "report")


def test_a_param_that_differs_is_named_without_the_credentials_of_a_url(tmp_path):
    from bench.report import fresh
    from bench.train import settings

    url = ["data.name=cifar10", "data.source=https://user:secret@example.org/cifar.tar.gz?token=secret"]
    settings.write(tmp_path, config.load(PARAMS, url), Cell("plain", 20, 0))  # config.yaml redacts the URL
    assert fresh.differences(config.load(PARAMS, url), tmp_path / "config.yaml") == []
    differ = fresh.differences(config.load(PARAMS, [*url, "train.lr=0.5"]), tmp_path / "config.yaml")
    assert differ == [f"train.lr={config.load(PARAMS).train.lr} there, 0.5 here"]
