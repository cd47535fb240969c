"""Progress of long work: a duration as text, a cell's expected duration, and `bench train`'s line per grid cell.

`bench train` prints the line when it trains a cell of the grid in the grid's own folder; `bench grid` estimates
the time left from the same per-cell estimate.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import record
from bench.config import Params
from bench.record import Cell, cells


def duration(seconds: float) -> str:
    """42s, 3m05s, 1h07m."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def estimate(cell: Cell, finished: dict[Cell, float]) -> float | None:
    """A cell's duration: the mean of the finished cells of its depth, else of all finished cells scaled by
    depth (time per step grows about linearly with it); None before any cell has finished."""
    same = [t for c, t in finished.items() if c.depth == cell.depth]
    if same:
        return sum(same) / len(same)
    return sum(finished.values()) / sum(c.depth for c in finished) * cell.depth if finished else None


def progress_line(params: Params, cell: Cell, runs: Path) -> str | None:
    """'cell k/N name, about T left': T from the cells before it in the grid that have finished; None for a
    cell outside the grid."""
    grid = cells(params)
    if cell not in grid:
        return None
    k = grid.index(cell)
    finished = {}
    for c in grid[:k]:
        try:
            finished[c] = float(json.loads(record.path(runs, c).read_text())[record.WALL_TIME])
        except (OSError, ValueError, KeyError, TypeError):  # not finished, or unreadable: no estimate from it
            continue
    left = ""
    if finished:
        seconds = sum(estimate(c, finished) for c in grid[k:])
        left = f", about {duration(seconds)} of training left in the grid"
    return f"cell {k + 1}/{len(grid)} {cell.name}{left}"
