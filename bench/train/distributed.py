"""The one rank-zero flag: side effects (files, prints, W&B) happen on the process of global rank 0 only."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_only


def is_rank_zero() -> bool:
    """Whether this process has global rank 0. A function, not a constant: Lightning sets the rank when its
    strategy starts the processes, after this module is imported."""
    return rank_zero_only.rank == 0
