"""The report's statistics: mean and spread over seeds, the binomial noise of a finite test set, and when two
results differ by less than that noise.

Errors are fractions in [0, 1]. A test error measured on N images is a binomial proportion: its sampling
noise is about sqrt(p (1 - p) / N), 0.25 points at p = 7 % and N = 10,000, as large as the differences
between neighbouring depths in He et al. 2016 Table 6.
"""

from __future__ import annotations

import math
import statistics

Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.95996...: two-sided 95 %

NOISE_DEFINITION = (
    "Two results differ by less than the noise when |difference of their mean test errors| < 1.96 x "
    "sqrt(s1²/n1 + s2²/n2 + p1(1-p1)/N1 + p2(1-p2)/N2): the seed-to-seed spread of each mean (sample std s over "
    "its n non-diverged seeds) plus the binomial sampling noise of each mean error p on a test set of N images. "
    "N is not multiplied by the seeds, since every seed is scored on the same images; the two cells' test sets "
    "are treated as independent although they are the same images, which makes the band wider (conservative). "
    "With one seed the spread over seeds is unmeasured and only the test-set term is left. The band is a screen, "
    "not a significance test: with a few seeds a t quantile would be wider than 1.96, and many pairs are compared."
)


def summarise(values: list[float]) -> dict:
    """Mean and sample std (None for a single value) of the finite values, and their count n."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return {
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
    terms = [s["std"] ** 2 / s["n"] for s in (a, b) if s["std"] is not None]
    terms += [s["mean"] * (1 - s["mean"]) / s["test_images"] for s in (a, b) if s.get("test_images")]
    return Z95 * math.sqrt(sum(terms)) if terms else None


def within_noise(a: dict, b: dict) -> tuple[float, float] | None:
    """(difference a - b, noise half width) when |a - b| is smaller than the noise; None otherwise or if unmeasured."""
    noise = difference_noise(a, b)
    if noise is None:
        return None
    diff = a["mean"] - b["mean"]
    return (diff, noise) if abs(diff) < noise else None
