"""The Hessian of a loss over all trainable parameters, as an operator: its largest eigenvalue and its trace, the two
numbers of Yao, Gholami, Keutzer and Mahoney 2020 (PyHessian, Sec. 3).

- lambda_max: the largest algebraic eigenvalue, by scipy's ARPACK (implicitly restarted Lanczos, `eigsh`) on a
  `LinearOperator` whose product is an exact Hessian-vector product (double backward). PyHessian runs a power
  iteration; Lanczos converges to the same eigenvalue in fewer products.
- trace: Hutchinson's estimator, the mean of v^T H v over Rademacher vectors v (E[v v^T] = I), with its standard
  error. PyHessian's definition.

Why not a library of Hessian operators: curvlinops-for-pytorch (the obvious one) requires backpack-for-pytorch,
which requires torchvision without a bound; pip then installs a torchvision built for another torch (importing it
fails on PyPI's CPU torch), or replaces torch itself. The two estimators are a few lines over scipy's solver, and
tests/test_curvature.py checks both against the explicit Hessian of a small net.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

TOLERANCE = 1e-3  # ARPACK's relative accuracy of the eigenvalue
LANCZOS = 8  # ARPACK's basis size: 9 products for the top eigenvalue of a trained ResNet-56, 21 with its default 20


class Hessian:
    """H = d^2 loss / d theta^2 at the current parameters, theta = every parameter that requires a gradient. The
    gradient's graph is built once; each product is one backward pass through it."""

    def __init__(self, loss: Callable[[], torch.Tensor], parameters: list[torch.nn.Parameter]):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.size = sum(p.numel() for p in self.parameters)
        self.gradient = torch.autograd.grad(loss(), self.parameters, create_graph=True)

    def product(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector v (float32, the parameters' dtype)."""
        pieces = torch.split(v, [p.numel() for p in self.parameters])
        shaped = [piece.view_as(p) for piece, p in zip(pieces, self.parameters)]
        hv = torch.autograd.grad(self.gradient, self.parameters, grad_outputs=shaped, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])

    def operator(self) -> LinearOperator:
        def matvec(v: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(-1))
            return self.product(x).double().numpy()

        return LinearOperator((self.size, self.size), matvec=matvec, dtype=np.float64)


def top_eigenvalue(h: Hessian, seed: int) -> float:
    """The largest algebraic eigenvalue of H; ARPACK starts from a seeded vector, so the result repeats."""
    start = np.random.default_rng(seed).standard_normal(h.size)
    value = eigsh(
        h.operator(), k=1, which="LA", tol=TOLERANCE, ncv=min(LANCZOS, h.size), v0=start, return_eigenvectors=False
    )
    return float(value[0])


def hutchinson_trace(h: Hessian, samples: int, seed: int) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H) over `samples` Rademacher vectors, and its standard error (0 for one sample)."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(samples):
        v = torch.randint(0, 2, (h.size,), generator=g).float().mul_(2).sub_(1)
        values.append(float(v.double() @ h.product(v).double()))
    spread = float(np.std(values, ddof=1) / np.sqrt(samples)) if samples > 1 else 0.0
    return float(np.mean(values)), spread
