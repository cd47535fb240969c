"""The report's statistics: mean and spread over seeds, the binomial noise of a finite test set, and when two
results differ by less than that noise.

Errors are fractions in [0, 1]. A test error measured on N images is a binomial proportion: its sampling
noise is about sqrt(p (1 - p) / N), 0.25 points at p = 7 % and N = 10,000, as large as the differences
between neighbouring depths in He et al. 2016 Table 6.
"""

from __future__ import annotations

import math
import statistics

from scipy.special import stdtrit  # Student's t quantile; scipy.stats costs a second and a half to import

Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.95996...: two-sided 95 %

NOISE_DEFINITION = (
    "Two results differ by less than the noise when |difference of their mean test errors| < q x sqrt(s1²/n1 + s2²/n2"
    " + p1(1-p1)/N1 + p2(1-p2)/N2): the seed-to-seed spread of each mean (sample std s over its n non-diverged seeds)"
    " plus the binomial sampling noise of each mean error p on a test set of N images. q is the 97.5 % quantile of "
    "Student's t with min(n1, n2) - 1 degrees of freedom (2.78 with 5 seeds, 4.30 with 3), and 1.96 where one seed "
    "leaves only the test-set term. N is not multiplied by the seeds, since every seed is scored on the same images; "
    "the two cells' test sets are treated as independent although they are the same images, which makes the band "
    "wider (conservative; the claims below pair the images). The band is a screen, not a test: many pairs are "
    "compared."
)


def t95(df: float) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom (4.303 at 2, 1.96 as df grows)."""
    return float(stdtrit(df, 0.975)) if df > 0 else math.nan


def t_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95 % interval of the mean of `values` (seeds): mean ± t(0.975, n-1) s / sqrt(n); None under 2 values."""
    s = summarise(values)
    if s["n"] < 2:
        return None
    half = t95(s["n"] - 1) * s["std"] / math.sqrt(s["n"])
    return s["mean"] - half, s["mean"] + half


def summarise(values: list[float]) -> dict:
    """Mean and sample std (None for a single value) of the finite values, their count n and the values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "values": values,
        "n": len(values),
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion, k successes (here: errors) in n trials:

        centre = (k + z²/2) / (n + z²),   half width = z sqrt(k (n - k) / n + z²/4) / (n + z²)

    Unlike p ± z sqrt(p (1 - p) / n) it stays inside [0, 1] and is not empty at k = 0 (0 of 360: [0, 1.06 %])."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def error_interval(error: float, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a test error (a fraction) measured on n images."""
    return wilson(round(error * n), n)


def difference_noise(a: dict, b: dict) -> float | None:
    """Half width of the 95 % noise band of mean_a - mean_b (the definition in NOISE_DEFINITION). `a`, `b`:
    {"mean", "std", "n", "test_images"}. None where neither term is measured for either side, or a mean is missing."""
    if a["mean"] is None or b["mean"] is None:
        return None
    seeded = [s for s in (a, b) if s["std"] is not None]
    terms = [s["std"] ** 2 / s["n"] for s in seeded]
    terms += [s["mean"] * (1 - s["mean"]) / s["test_images"] for s in (a, b) if s.get("test_images")]
    q = t95(min(s["n"] for s in seeded) - 1) if seeded else Z95
    return q * math.sqrt(sum(terms)) if terms else None


def within_noise(a: dict, b: dict) -> tuple[float, float] | None:
    """(difference a - b, noise half width) when |a - b| is smaller than the noise; None otherwise or if unmeasured."""
    noise = difference_noise(a, b)
    if noise is None:
        return None
    diff = a["mean"] - b["mean"]
    return (diff, noise) if abs(diff) < noise else None


def split_into_modes(values: list[float], n_images: int | None) -> bool:
    """Whether a cell's seeds split into modes rather than scatter around one value: sorted, the widest gap
    between neighbouring seeds is more than half their range and more than 4 standard errors of the difference
    of two runs' errors on `n_images` test images (sqrt(2 p (1 - p) / N), p their mean). 3.6 / 5.6 / 36.4 % on
    360 images splits; 3.6 / 5.6 / 6.9 % does not. Such a cell is never to be read from its mean alone."""
    values = sorted(v for v in values if v is not None and math.isfinite(v))
    if len(values) < 3 or not n_images:
        return False
    gap = max(b - a for a, b in zip(values, values[1:]))
    p = statistics.fmean(values)
    return gap > 0.5 * (values[-1] - values[0]) and gap > 4 * math.sqrt(2 * p * (1 - p) / n_images)
