"""Iteration-based learning-rate schedules (He et al. 2016, Sec. 4.2): a multiplier of the base lr per step.

Multistep decay at iteration milestones (lr / 10 at 32k and 48k of 64k), an optional linear warm-up,
and the paper's constant low-lr warm-up for ResNet-110 (0.01 for the first ~400 iterations).
"""

from __future__ import annotations

from bisect import bisect_right

from bench.schema import Train


def lr_factor(step: int, cfg: Train, depth: int) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (0-based) for a net of `depth` layers."""
    if cfg.low_lr is not None and depth >= cfg.low_lr_min_depth and step < cfg.low_lr_steps:
        return cfg.low_lr / cfg.lr
    factor = cfg.gamma ** bisect_right(sorted(cfg.milestones), step)
    if step < cfg.warmup_steps:
        factor *= (step + 1) / cfg.warmup_steps
    return factor
