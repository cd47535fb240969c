"""Comparisons of cells scored on the same images: a contrast of mean errors with a 95 % interval that counts both
sources of noise, the seeds and the images.

A contrast is D = sum_j c_j e_j, where e_j is cell j's error averaged over its seeds and the c_j sum to 0: +1, -1
for "cell a against cell b"; +1, -1, -1, +1 for "a degrades more than b between two depths". Its variance has two
parts, added:

- the seeds: sum_j c_j² s_j² / n_j, s_j the sample std of cell j's error over its n_j seeds (runs of one cell
  differ in their initial weights and data order);
- the images: every seed of every cell is scored on the same images, so the test set's noise is paired. With
  d_i = sum_j c_j (the fraction of cell j's seeds that get image i wrong), the standard error is sd(d_i) / sqrt(N),
  the limit of a paired bootstrap over images. A cell that is right on the same easy images as another is not
  charged twice for them, as two independent binomial terms would. Images of different splits (a gap: the test
  split against the training split) are independent sets, whose terms add.

The interval is D ± t(0.975, df) sqrt(seeds + images), df by Welch and Satterthwaite from the seed terms (the
image term, over hundreds of images, counts as known). A cell with one seed has no measured spread: no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.report.stats import t95


@dataclass(frozen=True)
class Term:
    """One cell in a contrast: its coefficient, the split its errors are on, and which images each seed gets
    wrong, (seeds, images) booleans."""

    coefficient: float
    split: str
    wrong: np.ndarray


@dataclass(frozen=True)
class Result:
    estimate: float
    interval: tuple[float, float]
    df: float
    se_seeds: float
    se_images: float

    def to_json(self) -> dict:
        return {
            "estimate": self.estimate,
            "interval": list(self.interval),
            "df": self.df,
            "se_seeds": self.se_seeds,
            "se_images": self.se_images,
        }


def contrast(terms: list[Term]) -> Result | None:
    """The contrast sum_j c_j e_j of the terms' mean errors and its 95 % interval; None where a cell has fewer
    than 2 seeds, or the cells of one split were scored on different numbers of images."""
    if any(len(t.wrong) < 2 for t in terms):
        return None
    seed_vars = [t.coefficient**2 * np.var(t.wrong.mean(1), ddof=1) / len(t.wrong) for t in terms]
    image_var = 0.0
    for split in sorted({t.split for t in terms}):
        of_split = [t for t in terms if t.split == split]
        if len({t.wrong.shape[1] for t in of_split}) != 1:
            return None
        d = sum(t.coefficient * t.wrong.mean(0) for t in of_split)  # per image
        image_var += float(np.var(d, ddof=1)) / len(d)
    estimate = float(sum(t.coefficient * t.wrong.mean() for t in terms))
    total = sum(seed_vars) + image_var
    welch = sum(v**2 / (len(t.wrong) - 1) for v, t in zip(seed_vars, terms))
    df = sum(seed_vars) ** 2 / welch if welch > 0 else min(len(t.wrong) for t in terms) - 1
    half = t95(df) * math.sqrt(total)
    return Result(estimate, (estimate - half, estimate + half), df, math.sqrt(sum(seed_vars)), math.sqrt(image_var))


def mean_interval(values: list[float]) -> Result | None:
    """The mean of per-seed values (a diagnostic of each net, measured once) with its t interval, n - 1 df."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean, se = float(np.mean(values)), float(np.std(values, ddof=1)) / math.sqrt(len(values))
    half = t95(len(values) - 1) * se
    return Result(mean, (mean - half, mean + half), len(values) - 1, se, 0.0)


def difference_interval(a: list[float], b: list[float]) -> Result | None:
    """mean(a) - mean(b) of two cells' per-seed values, Welch's t interval."""
    a, b = ([v for v in xs if v is not None and math.isfinite(v)] for xs in (a, b))
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else min(len(a), len(b)) - 1
    diff = float(np.mean(a) - np.mean(b))
    half = t95(df) * se
    return Result(diff, (diff - half, diff + half), float(df), se, 0.0)
