"""The ablation grid as data: its cells in dvc.yaml's matrix order, and a progress line per cell."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from bench import models
from bench.config import Params


def cell_name(variant: str, depth: int, seed: int) -> str:
    """The cell key, identical in folders, DVC stage names (train@KEY) and W&B run names."""
    return f"{variant}-{depth}-{seed}"


def cells(params: Params) -> list[tuple[str, int, int]]:
    """Every (variant, depth, seed), in the order DVC expands the train matrix: variants, depths, seeds."""
    g = params.grid
    for v, d in itertools.product(g.variants, g.depths):
        models.check(v, d, params.model.shortcut)
    return list(itertools.product(g.variants, g.depths, g.seeds))


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_line(params: Params, cell: tuple[str, int, int], runs: Path) -> str | None:
    """'cell k/N name, about T left'. T: each remaining cell is estimated by the finished cells before it of
    the same depth, else by all finished cells scaled by depth (time per step grows about linearly with it)."""
    grid = cells(params)
    if cell not in grid:
        return None
    k = grid.index(cell)
    done: dict[int, list[float]] = {}
    for v, d, s in grid[:k]:
        path = runs / cell_name(v, d, s) / "metrics.json"
        if path.exists():
            done.setdefault(d, []).append(json.loads(path.read_text())["wall_time_s"])
    left = ""
    if done:
        per_layer = sum(map(sum, done.values())) / sum(d * len(t) for d, t in done.items())
        seconds = sum(sum(done[d]) / len(done[d]) if d in done else per_layer * d for _, d, _ in grid[k:])
        left = f", about {_duration(seconds)} of training left in the grid"
    return f"cell {k + 1}/{len(grid)} {cell_name(*cell)}{left}"
