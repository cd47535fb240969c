"""The ablation grid as data: its cells in dvc.yaml's matrix order, and a progress line per cell."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from bench import record
from bench.config import Params
from bench.record import Cell


def cells(params: Params) -> list[Cell]:
    """Every (variant, depth, seed), in the order DVC expands the train matrix: variants, depths, seeds."""
    g = params.grid
    return [Cell(*c) for c in itertools.product(g.variants, g.depths, g.seeds)]


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_line(params: Params, cell: Cell, runs: Path) -> str | None:
    """'cell k/N name, about T left'. T: each remaining cell is estimated by the finished cells before it of
    the same depth, else by all finished cells scaled by depth (time per step grows about linearly with it)."""
    grid = cells(params)
    if cell not in grid:
        return None
    k = grid.index(cell)
    done: dict[int, list[float]] = {}
    for c in grid[:k]:
        try:
            seconds = float(json.loads(record.path(runs, c).read_text())[record.WALL_TIME])
        except (OSError, ValueError, KeyError, TypeError):  # not finished, or unreadable: no estimate from it
            continue
        done.setdefault(c.depth, []).append(seconds)
    left = ""
    if done:
        per_layer = sum(map(sum, done.values())) / sum(d * len(t) for d, t in done.items())
        seconds = sum(sum(done[c.depth]) / len(done[c.depth]) if c.depth in done else per_layer * c.depth
                      for c in grid[k:])
        left = f", about {_duration(seconds)} of training left in the grid"
    return f"cell {k + 1}/{len(grid)} {cell.name}{left}"
