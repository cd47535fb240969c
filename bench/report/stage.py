"""`bench report`: aggregate every cell of the grid into tables, figures and a Markdown report.

Final test error per variant x depth as mean +- std over the non-diverged seeds (the final checkpoint, never
the best epoch), each run's 95 % Wilson interval, which differences are within the noise, He et al. 2016
Table 6 and akamaster's reproduction like for like; figures in the layout of He et al. Fig. 6 (training and
test error vs iteration, plain vs residual); error and generalisation gap vs depth; the claims (claims.json) and
results.md, the README's results section, written from them. It reads top to bottom: load, aggregate, claims,
figures, render, swap.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bench import record
from bench.config import Params
from bench.files import recover_dir, replace_dir, temporary, write_json, write_text
from bench.plots import save
from bench.record import GAP, TEST_ERROR, TRAIN_ERROR, Run, cells, chance_error
from bench.report import curvature as report_curvature
from bench.report import landscape as report_landscape
from bench.report import lr as report_lr
from bench.report import pathology_figures, propagation
from bench.report import paths as report_paths
from bench.report.claims import claims, claims_json
from bench.report.figures import plot_convergence, plot_vs_depth
from bench.report.findings import results_md
from bench.report.fresh import check_fresh
from bench.report.grid import aggregate, depth_csv, only, summary, variants_depths
from bench.report.html import PAGE
from bench.report.html import page as html_page
from bench.report.pathologies import TOY_FIGURE
from bench.report.render import document

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUMMARY = "metrics.json"  # swapped in last: a report with a metrics.json is complete
CLAIMS = "claims.json"  # bench.report.claims: every conclusion, computed; a DVC metric


STUDIES = {"landscape": report_landscape, "curvature": report_curvature, "paths": report_paths}  # report order


def read_study(folder: str | Path | None, file: str) -> dict | None:
    """A study stage's JSON summary (landscape.json, ...) in its folder, or None where the stage did not run."""
    if folder is None or not (Path(folder) / file).exists():
        return None
    return json.loads((Path(folder) / file).read_text())


def collect(params: Params, runs: Path) -> list[Run]:
    """Each grid cell's record, once, in the grid's order; a missing cell, or one that other params or code trained,
    is an error naming it."""
    results = [record.load(runs, cell) for cell in dict.fromkeys(cells(params))]  # a seed listed twice is one run
    check_fresh(params, runs, [r.metrics for r in results])
    return results


def report(
    params: Params,
    runs: str | Path,
    out: str | Path,
    lr_summary: str | Path | None = None,
    toy_dir: str | Path | None = None,
    studies: dict[str, str | Path | None] | None = None,
) -> dict:
    """Write the report into `out`; return its summary (the report's metrics.json). `lr_summary`: the learning-rate
    sweep's summary.json; `toy_dir`: the toy stage's folder; `studies`: the folders of the stages that study trained
    cells, by name (landscape, curvature, paths); each is left out where it is absent. Every cell must exist before
    anything is written."""
    check_out(Path(runs), Path(out))
    results = collect(params, Path(runs))
    sweep = json.loads(Path(lr_summary).read_text()) if lr_summary and Path(lr_summary).exists() else None
    toy = read_toy(toy_dir)
    folders = {name: (studies or {}).get(name) for name in STUDIES}
    read = {name: read_study(folders[name], module.FILE) for name, module in STUDIES.items()}

    metrics = [r.metrics for r in results]
    agg = aggregate(metrics)
    chance = chance_error(only(m.num_classes for m in metrics))  # None where the cells' classes differ

    figs = figures(params, results, agg, chance, sweep)

    variants, depths = variants_depths(params)
    claim_list = claims(results, depths, sweep, read)
    sections = [  # report.md links each stage's figure where the stage wrote it
        module.section(read[name], os.path.relpath(folders[name] or ".", out), variants, depths)
        for name, module in STUDIES.items()
    ]
    md = document(params, results, agg, chance, sweep, toy, claim_list, "\n".join(s for s in sections if s))
    texts = {
        "report.md": md,
        PAGE: html_page(md, ("report.md", CLAIMS, "results.md")),  # report.md as one page, to read offline
        "results.md": results_md(params, results, agg, claim_list, variants, depths),
        CLAIMS: json.dumps(claims_json(claim_list), indent=2) + "\n",
        "error_vs_depth.csv": depth_csv(agg, depths, TEST_ERROR),
        "gap_vs_depth.csv": depth_csv(agg, depths, GAP),
    }
    s = summary(metrics, agg)

    with beside(Path(out)) as folder:
        (folder / "figures").mkdir()
        for name, fig in figs.items():
            save(fig, folder / "figures" / name)
        for name, text in texts.items():
            write_text(folder / name, text)
        write_json(folder / SUMMARY, s)
    return s


def check_out(runs: Path, out: Path) -> None:
    """Refuse an `out` in the cells' folder, or a cell's own folder anywhere: the report's files, its metrics.json
    first, would replace the cell's."""
    try:
        cell = "variant" in json.loads((out / SUMMARY).read_text())  # a cell's record, not a report's summary
    except (OSError, ValueError, TypeError):
        cell = False
    cell = cell or any((out / name).exists() for name in ("env.json", "history.csv", record.PREDICTIONS))
    if out.resolve().is_relative_to(runs.resolve()) or cell:
        where = "a cell's folder" if cell else f"inside the cells' folder {runs}"
        raise ValueError(f"--out {out} is {where}: the report would overwrite its results; choose another folder")


def read_toy(toy_dir: str | Path | None) -> dict | None:
    """The toy stage's toy.json where it drew its figure ({} where the figure has no numbers beside it); None
    where it did not run."""
    if toy_dir is None or not (Path(toy_dir) / TOY_FIGURE).exists():
        return None
    path = Path(toy_dir) / "toy.json"
    return json.loads(path.read_text()) if path.exists() else {}


def figures(
    params: Params, results: list[Run], agg: dict, chance: float | None, sweep: dict | None
) -> dict[str, Figure]:
    """Every figure of the report by file name, drawn and not yet saved."""
    variants, depths = variants_depths(params)
    errors = [(TRAIN_ERROR, "final training error (%, log scale)"), (TEST_ERROR, "final test error (%, log scale)")]
    gap = [(GAP, "test - training error (percentage points)")]
    figs = {
        "convergence.png": plot_convergence(results, variants, chance),
        "error_vs_depth.png": plot_vs_depth(
            agg, variants, depths, errors, "Final error vs depth (degradation: plain nets get worse)", chance
        ),
        "gap_vs_depth.png": plot_vs_depth(agg, variants, depths, gap, "Generalisation gap vs depth"),
        **pathology_figures.figures(results, variants, depths),
        **propagation.figures(results, variants, depths),
    }
    if sweep is not None:
        figs[report_lr.FIGURE] = report_lr.plot_lr_sweep(sweep)
    return figs


@contextmanager
def beside(final: Path) -> Iterator[Path]:
    """A fresh folder beside `final` to build the outputs in; when the block ends without an error, each of them
    is swapped into `final` (metrics.json last) and the folder removed. Other files in `final` (the toy's) stay;
    what a killed report left beside `final` is tidied first."""
    for message in recover_dir(final):
        print(f"bench report: {message}", flush=True)
    folder = temporary(final)
    folder.mkdir(parents=True)
    try:
        yield folder
        final.mkdir(parents=True, exist_ok=True)
        for entry in sorted(folder.iterdir(), key=lambda p: p.name == SUMMARY):
            replace_dir(entry, final / entry.name) if entry.is_dir() else os.replace(entry, final / entry.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
