"""A claim and its verdict: the record every finding of the report is, and the grid of finished cells the
tests read. `decide` turns a test's estimate and 95 % interval into `holds` (true, false or "not shown") and the
sentence the report prints (bench/report/claims.py states the claims)."""

from __future__ import annotations

import math

import numpy as np

from bench.record import Run
from bench.report.contrast import Result, Term
from bench.report.grid import by_cell

HOLDS_WORDS = {True: "holds", False: "does not hold: the opposite is shown", "not shown": "not shown"}
PAIRED = "contrast of mean errors, paired over the shared images, t over seeds (bench/report/contrast.py)"


def claim(cid: str, pathology: str, hypothesis: str, cells: list[str], test: str, unit: str) -> dict:
    return {"id": cid, "pathology": pathology, "claim": hypothesis, "cells": cells, "test": test, "unit": unit}


def decide(c: dict, result: Result | None, n: dict, why: str | None = None, sign: int = 1) -> dict:
    """Fill in the statistic, n and `holds` (the hypothesis: sign x the estimate > 0), and the sentence."""
    c = {**c, "n": n}
    if why is None and result is None:
        why = "a cell has fewer than 2 seeds: no spread over seeds is measured"
    if why is not None:
        return {
            **c,
            "statistic": None,
            "holds": "not shown",
            "why": why,
            "sentence": f"{c['claim']}: not shown ({why}).",
        }
    lo, hi = result.interval
    low, high = sorted((sign * lo, sign * hi))
    holds = True if low > 0 else False if high < 0 else "not shown"
    c = {**c, "statistic": result.to_json(), "holds": holds}
    if holds == "not shown":
        c["why"] = "the 95 % interval includes 0"
    scale, unit = {"error": (100, " points"), "log10": (1, " in log10")}.get(c["unit"], (1, ""))
    figures = (
        f"{scale * result.estimate:+.3g}{unit}, 95 % interval [{scale * lo:+.3g}, {scale * hi:+.3g}], "
        f"t with {result.df:.1f} df, n = {', '.join(map(str, n.values()))}"
    )
    return {**c, "sentence": f"{c['claim']}: {HOLDS_WORDS[holds]} ({figures})."}


class Grid:
    """The finished cells by (variant, depth): their records and, for the non-diverged seeds, which images each
    seed gets wrong per split."""

    def __init__(self, results: list[Run]):
        self.runs: dict[tuple[str, int], list[Run]] = by_cell(results)

    def missing(self, *cells: tuple[str, int]) -> str | None:
        """Why these cells cannot be compared: absent from the grid, or a seed diverged; None if they can."""
        for v, d in cells:
            runs = self.runs.get((v, d))
            if not runs:
                return f"{v}-{d} is not in the grid"
            if dead := sum(r.metrics.diverged for r in runs):
                return f"{dead} of {len(runs)} seeds of {v}-{d} diverged (no error to average)"
        return None

    def term(self, coefficient: float, split: str, v: str, d: int) -> Term:
        wrong = [r.predictions[f"{split}/predicted"] != r.predictions[f"{split}/label"] for r in self.runs[v, d]]
        return Term(coefficient, split, np.stack(wrong))

    def scalar(self, key: str, v: str, d: int, log: bool = False) -> list[float]:
        values = [r.metrics.scalars.get(key) for r in self.runs.get((v, d), [])]
        values = [x for x in values if x is not None]
        return [math.log10(x) for x in values if x > 0] if log else values

    def n(self, *cells: tuple[str, int]) -> dict:
        return {f"{v}-{d}": len(self.runs.get((v, d), [])) for v, d in cells}
