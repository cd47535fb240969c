"""The loss along the directions (Li et al. 2018): L(theta + a d1) on a line and L(theta + a d1 + b d2) on a
grid, a in [-span, span], evaluated on a fixed subset of the training set, no augmentation, BN in eval mode.

Non-convexity. Li et al. (Sec. 6, Fig. 7) map |lambda_min / lambda_max| of the full Hessian at every grid point,
which costs Hessian eigensolves per point. Here the same ratio is read from the surface itself: at each interior
point of the grid, the 2x2 Hessian of the plotted surface by central differences (exact for a quadratic), whose
eigenvalues are those of the Hessian restricted to the plane of the two directions. A negative one there implies
negative curvature of the full loss along that direction of the plane (so the measure never calls a convex loss
non-convex); a plane can miss negative curvature that the full Hessian has, so it is a lower bound. The scalar is
the fraction of interior points where lambda_min < -RATIO * |lambda_max|, the paper's "large negative eigenvalue
relative to the largest", with RATIO = 0.1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

RATIO = 0.1

Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # parameters -> the scalar loss


def coordinates(span: float, resolution: int) -> np.ndarray:
    return np.linspace(-span, span, resolution)


@torch.no_grad()
def line(loss: Loss, theta: dict, d1: dict, coords: np.ndarray) -> np.ndarray:
    """L(theta + a d1) for each a of `coords`."""
    return np.array([float(loss(_moved(theta, d1, a))) for a in coords])


@torch.no_grad()
def plane(loss: Loss, theta: dict, d1: dict, d2: dict, coords: np.ndarray) -> np.ndarray:
    """L(theta + a d1 + b d2): rows b, columns a (as matplotlib's contour reads them)."""
    return np.array([[float(loss(_moved(_moved(theta, d1, a), d2, b))) for a in coords] for b in coords])


def _moved(theta: dict, d: dict, step: float) -> dict:
    return {k: theta[k] + step * d[k] for k in theta}


def curvatures(surface: np.ndarray, h: float) -> np.ndarray:
    """The eigenvalues (lambda_min, lambda_max) of the central-difference 2x2 Hessian at each interior point of
    `surface` (rows b, columns a, spacing h): shape (rows - 2, columns - 2, 2)."""
    f = surface
    f_aa = (f[1:-1, 2:] - 2 * f[1:-1, 1:-1] + f[1:-1, :-2]) / h**2
    f_bb = (f[2:, 1:-1] - 2 * f[1:-1, 1:-1] + f[:-2, 1:-1]) / h**2
    f_ab = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * h**2)
    hessians = np.stack([np.stack([f_aa, f_ab], -1), np.stack([f_ab, f_bb], -1)], -2)
    return np.linalg.eigvalsh(hessians)  # ascending


def nonconvex_fraction(surface: np.ndarray, h: float) -> float | None:
    """The fraction of interior points whose lambda_min < -RATIO |lambda_max|; None where the surface is not
    finite (a loss that overflowed is no curvature)."""
    if not np.isfinite(surface).all():
        return None
    lam = curvatures(surface, h)
    return float(np.mean(lam[..., 0] < -RATIO * np.abs(lam[..., 1])))
