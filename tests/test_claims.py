"""The report's conclusions: the contrast of errors paired over images (against hand-computed values), the claims
it decides, the cells whose seeds split into modes, and the README's results, which are the report's."""

import json

import numpy as np
import pytest
from helpers import PARAMS, ROOT, metrics, write_cell

from bench import config, record
from bench.report import readme
from bench.report.claims import claims, claims_json
from bench.report.contrast import Term, contrast, difference_interval, mean_interval
from bench.report.stats import split_into_modes


def test_a_contrast_adds_the_seeds_and_the_paired_images_against_hand_computed_values():
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)  # 2 seeds x 4 images: errors 0.5, 0.25
    b = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool)  # errors 0.25, 0
    r = contrast([Term(1, "test", a), Term(-1, "test", b)])
    assert r.estimate == pytest.approx(0.25)  # 0.375 - 0.125
    # seeds: var(0.5, 0.25) / 2 + var(0.25, 0) / 2 = 0.015625 + 0.015625
    assert r.se_seeds == pytest.approx(0.03125**0.5)
    # images: d = (1, 0.5, 0, 0) - (0.5, 0, 0, 0) = (0.5, 0.5, 0, 0); var = 1/3 * 0.25; / 4 images
    assert r.se_images == pytest.approx((0.25 / 3 / 4) ** 0.5)
    assert r.df == pytest.approx(2.0)  # Welch: 0.03125² / (2 * 0.015625² / 1)
    half = 4.302653 * (0.03125 + 0.25 / 12) ** 0.5  # t(0.975, 2) sqrt(0.0520833) = 0.981949
    assert r.interval == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)


def test_pairing_charges_shared_mistakes_once():
    """Two nets wrong on the same 100 of 1,000 images but 10: independent binomial terms would see noise of
    about 1.3 points; paired, only the 10 images differ."""
    rng = np.random.default_rng(0)
    base = np.zeros(1000, bool)
    base[:100] = True
    a = np.stack([base.copy() for _ in range(3)])
    b = a.copy()
    b[:, 100:110] = True
    a[:, 0] = rng.random(3) < 0.5  # a seed-to-seed spread for each
    b[:, 1] = rng.random(3) < 0.5
    r = contrast([Term(1, "test", b), Term(-1, "test", a)])
    independent = (2 * 0.1 * 0.9 / 1000) ** 0.5
    assert r.se_images < independent / 3


def test_one_seed_has_no_interval_and_diagnostics_use_t_over_seeds():
    assert contrast([Term(1, "test", np.zeros((1, 4), bool)), Term(-1, "test", np.zeros((2, 4), bool))]) is None
    r = mean_interval([0.03, 0.05, 0.07])  # mean 0.05, s = 0.02: half width 4.302653 * 0.02 / sqrt(3)
    assert r.interval == pytest.approx((0.0003172, 0.0996828), abs=1e-7)
    d = difference_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # Welch with one spread: df = 2
    assert (d.estimate, d.df) == (pytest.approx(2.0), pytest.approx(2.0))


def test_seeds_that_split_into_modes_are_flagged():
    assert split_into_modes([0.036, 0.056, 0.364], 360)  # one seed stalled
    assert not split_into_modes([0.036, 0.056, 0.069], 360)  # scatter around one value
    assert not split_into_modes([0.0, 0.5], 360)  # two seeds cannot show modes


GRID = {  # (variant, depth): (test, clean training error, intact probe error) per seed
    ("plain_bn", 8): [(0.04, 0.01, 0.04), (0.05, 0.012, 0.05), (0.045, 0.011, 0.045)],
    ("plain_bn", 56): [(0.70, 0.68, 0.7), (0.75, 0.74, 0.75), (0.72, 0.7, 0.72)],
    ("residual_bn", 8): [(0.03, 0.008, 0.03), (0.035, 0.009, 0.035), (0.032, 0.007, 0.03)],
    ("residual_bn", 56): [(0.80, 0.01, 0.05), (0.82, 0.012, 0.05), (0.81, 0.011, 0.05)],  # overfits: test > plain's
}


def hand_grid(runs):
    for (v, d), seeds in GRID.items():
        for s, (test, train, intact) in enumerate(seeds):
            scalars = {
                "init/grad_ratio": 100.0 + 20 * s if v == "plain_bn" else 1.0,
                "init/shattering": 0.1 * (1 + s) if v == "plain_bn" else 0.5 + 0.01 * s,
                "end/intact_error": intact,
                "end/lesion_mean_increase": 0.4 + 0.01 * s if v == "plain_bn" else 0.1 + 0.01 * s,
                "init/branch_ratio": 0.6 + 0.01 * s if v == "residual_bn" else None,  # plain nets have no skip
                "end/branch_ratio": 0.2 + 0.02 * s if v == "residual_bn" else None,
            }
            m = metrics(v, d, s, test, train, dataset="digits", scalars=scalars, test_images=360, train_images=1293)
            write_cell(runs, m)


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    runs = tmp_path_factory.mktemp("claims") / "runs"
    hand_grid(runs)
    grid = ["grid.variants=[plain_bn, residual_bn]", "grid.depths=[8, 56]", "grid.seeds=[0, 1, 2]"]  # GRID's 3 seeds
    params = config.load(PARAMS, grid)
    results = [record.load(runs, c) for c in record.cells(params)]
    return {c["id"]: c for c in claims(results, [8, 56], None)}


def test_a_claim_holds_only_when_its_interval_is_on_the_claimed_side(decided):
    assert decided["degradation/plain_bn"]["holds"] is True
    assert decided["degradation/residual_bn"]["holds"] is True
    lo, hi = decided["degradation/plain_bn"]["statistic"]["interval"]
    assert 0 < lo < hi
    assert decided["residual/test_error"]["holds"] is False  # residual_bn-56 is worse on the test set here
    assert decided["overfitting/residual_bn"]["holds"] is True
    assert decided["gradients/exploding"]["holds"] is True  # plain_bn's gains 100, 120, 140
    assert decided["shattering/residual_bn"]["holds"] is True
    # log10(0.2 / 0.6), log10(0.22 / 0.61), log10(0.24 / 0.62): mean -0.444, a tight spread below 0
    assert decided["branches/near_zero"]["holds"] is True
    assert decided["branches/near_zero"]["statistic"]["estimate"] == pytest.approx(-0.4441, abs=1e-4)
    assert decided["degradation/plain_bn"]["n"] == {"plain_bn-56": 3, "plain_bn-8": 3}
    assert "holds (+" in decided["degradation/plain_bn"]["sentence"]


def test_a_claim_the_grid_cannot_carry_says_why(decided):
    for cid, why in [
        ("gradients/vanishing", "plain-56 is not in the grid"),
        ("variance/residual", "residual-56 is not in the grid"),
        ("propagation/bn", "residual-56 is not in the grid"),
        ("lesions/depth-56", "intact error above 50% in plain_bn-56-0"),
        ("lr/bn", "the learning-rate sweep did not run"),
    ]:
        assert decided[cid]["holds"] == "not shown", cid
        assert why in decided[cid]["why"], cid
    assert decided["lesions/depth-8"]["holds"] is True  # relative to headroom: 0.41 / 0.85 against 0.11 / 0.87


def test_claims_json_leads_with_holds_by_id(decided):
    out = claims_json(list(decided.values()))
    assert list(out["holds"]) == list(decided)
    assert json.loads(json.dumps(out)) == out  # JSON as it is: no NaN, no tuples


def test_the_readme_s_results_are_the_report_s():
    """README.md's results section is report/results.md, which the report stage writes from claims.json."""
    assert readme.section((ROOT / "README.md").read_text()) == (ROOT / "report/results.md").read_text()


def test_the_readme_splice_replaces_only_between_its_markers():
    text = f"# x\n\n{readme.START}\nold\n{readme.END}\n\nafter\n"
    assert readme.splice(text, "new\n") == f"# x\n\n{readme.START}\nnew\n{readme.END}\n\nafter\n"
    with pytest.raises(ValueError, match="no results section"):
        readme.splice("# no markers\n", "new")


def test_a_claim_that_a_value_is_below_its_reference_holds_on_the_negative_side():
    from bench.report.claims import claim, decide

    c = claim("x", "vanishing gradients", "the gain is below 1", ["plain-56"], "t", "log10")
    below = mean_interval([-4.0, -4.2, -3.9])
    assert decide(c, below, {"plain-56": 3}, sign=-1)["holds"] is True
    assert decide(c, below, {"plain-56": 3})["holds"] is False  # the same numbers against "above 1"
    assert "(-4.03 in log10" in decide(c, below, {"plain-56": 3}, sign=-1)["sentence"]  # the estimate as measured


def test_a_split_cell_with_a_diverged_seed_is_named_with_it():
    from bench.report.findings import modes_note

    seeds = [metrics("residual_bn", 56, s, t) for s, t in enumerate([0.036, 0.056, 0.364])]
    note = modes_note([*seeds, metrics("residual_bn", 56, 3, None, diverged=True)])
    assert "residual_bn-56 (3.6 / 5.6 / 36.4 / diverged %)" in note
