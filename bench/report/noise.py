"""The report's noise: each run's test error with its 95 % Wilson interval, which differences between cells are
within the noise (bench.report.stats), and which runs are at chance level.
"""

from __future__ import annotations

from itertools import combinations

from bench.record import AT_CHANCE, TEST_ERROR, TEST_IMAGES, Metrics, chance_error
from bench.report.markdown import table
from bench.report.stats import NOISE_DEFINITION, difference_noise, error_interval, within_noise


def at_chance(m: Metrics) -> bool:
    """A run whose final training error is at chance level: it has not learnt, so its small gap means nothing."""
    chance = chance_error(m.num_classes)
    train = m.clean_train_error
    return bool(chance) and not m.diverged and train is not None and train >= AT_CHANCE * chance


def fmt_run(m: Metrics) -> str:
    """One run's test error (%) and its 95 % Wilson interval from the test set's size."""
    if m.diverged or m.test_error is None:
        return f"diverged at step {m.diverged_step}" if m.diverged else "–"
    lo, hi = error_interval(m.test_error, m.test_images)
    return f"{100 * m.test_error:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" + (" at chance" if at_chance(m) else "")


def runs_table(results: list[Metrics], variants: list[str], depths: list[int]) -> str:
    """One row per variant x depth, one column per seed."""
    seeds = sorted({m.seed for m in results})
    by_cell = {m.cell: m for m in results}
    rows = [
        [f"{v}-{d}", *(fmt_run(by_cell[v, d, s]) if (v, d, s) in by_cell else "" for s in seeds)]
        for d in depths
        for v in variants
    ]
    return table(["cell", *(f"seed {s}" for s in seeds)], rows)


def noise_stats(a: dict) -> dict:
    """A cell's aggregate as bench.report.stats.difference_noise takes it."""
    return {**a[TEST_ERROR], "test_images": a[TEST_IMAGES]}


def fmt_close(name: str, close: tuple[float, float]) -> str:
    return f"{name}: Δ {100 * close[0]:+.2f}, noise ± {100 * close[1]:.2f}"


def noise_section(agg: dict, variants: list[str], depths: list[int]) -> str:
    """The comparisons whose difference is within the noise: every pair of variants at each depth, and each
    variant's neighbouring depths."""
    pairs = [
        (f"depth {d}: {v} vs {w}", agg[v, d], agg[w, d])
        for d in depths
        for v, w in combinations(variants, 2)
        if (v, d) in agg and (w, d) in agg
    ]
    pairs += [
        (f"{v}: depth {d} vs {e}", agg[v, d], agg[v, e])
        for v in variants
        for d, e in zip(depths, depths[1:])
        if (v, d) in agg and (v, e) in agg
    ]
    measured = [(name, a, b) for name, a, b in pairs if difference_noise(noise_stats(a), noise_stats(b)) is not None]
    close = [
        (name + (" (at chance)" if a["at_chance"] or b["at_chance"] else ""), c)
        for name, a, b in measured
        if (c := within_noise(noise_stats(a), noise_stats(b)))
    ]
    lines = [f"- {fmt_close(name, c)}" for name, c in close] or (
        ["- none of the measured comparisons."] if measured else []
    )
    if len(measured) < len(pairs):
        lines.append(
            f"- {len(pairs) - len(measured)} of {len(pairs)} comparisons unmeasured: one seed and no "
            f"recorded test set size, or every seed diverged."
        )
    return (
        NOISE_DEFINITION + " Compared: every pair of variants at each depth, and each variant at neighbouring "
        "depths of the grid; listed: those within the noise, in percentage points.\n\n" + "\n".join(lines) + "\n"
    )
