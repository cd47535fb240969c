"""The grid's results as one compact table, printed where `bench grid` ends: test error % per variant (rows) and
depth (columns), the mean over seeds ± the half-width of its 95 % t interval (n-1 degrees of freedom). The report
(bench/report) says what the numbers mean; this is the glance at the end of a run."""

from __future__ import annotations

from pathlib import Path

from bench.config import Params
from bench.record import Cell, load
from bench.report.grid import variants_depths
from bench.report.markdown import table
from bench.report.stats import summarise, t_interval


def cell_text(errors: list[float | None], seeds: int) -> str:
    """'12.34 ± 5.67 (n=3)', '12.34 (n=1)', with 'k/n diverged' where seeds diverged; '–' where none finished."""
    ok = [e for e in errors if e is not None]
    diverged = f"{seeds - len(ok)}/{seeds} diverged" if len(ok) < seeds else ""
    if not ok:
        return diverged or "–"
    s, interval = summarise(ok), t_interval(ok)
    spread = f" ± {100 * (interval[1] - interval[0]) / 2:.2f}" if interval else ""
    notes = "; ".join(filter(None, [f"n={s['n']}", diverged]))
    return f"{100 * s['mean']:.2f}{spread} ({notes})"


def results_table(params: Params, runs: Path = Path("runs")) -> str | None:
    """The table, once every cell of the grid has its results in `runs`; None before."""
    variants, depths = variants_depths(params)
    seeds = list(dict.fromkeys(params.grid.seeds))
    rows = []
    for v in variants:
        row = [v]
        for d in depths:
            try:
                runs_ = [load(runs, Cell(v, d, s)).metrics for s in seeds]
            except ValueError:  # a cell not finished, or unreadable: the report names it
                return None
            row.append(cell_text([None if m.diverged else m.test_error for m in runs_], len(seeds)))
        rows.append(row)
    return table(["test error %, mean ± 95 % t", *(f"depth {d}" for d in depths)], rows)
