"""The record of one cell of the grid: its name, and the results its metrics.json holds.

Every stage that writes or reads a cell's results (train, lr-sweep, report, W&B, the CLI) takes
the names from here. Errors are fractions in [0, 1]; a value that is not finite is recorded as
null, since JSON has no NaN.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from bench.config import Params

VARIANTS = {  # the grid's variant names: (skip connection, batch normalisation); bench.models builds them
    "plain": (False, False),
    "plain_bn": (False, True),
    "residual": (True, False),
    "residual_bn": (True, True),
    "residual_fixup": (True, False),  # `residual`, initialised by Fixup (Zhang et al. 2019): see models.fixup_init
}
SHORTCUTS = ("projection", "zero_pad")  # He et al.'s option B (1x1 conv) and option A (parameter-free)
SPLITS = ("train", "val", "test")
TRAIN_LOSS, TRAIN_ERROR = "train/loss", "train/error"
VAL_LOSS, VAL_ERROR = "val/loss", "val/error"
TEST_LOSS, TEST_ERROR = "test/loss", "test/error"
DIVERGED, DIVERGED_STEP = "diverged", "diverged_step"  # a non-finite loss, and the step it first appeared at
GAP = "gap"  # test error - training error: the generalisation gap
WALL_TIME, IMAGES_PER_S = "wall_time_s", "images_per_s"
NUM_CLASSES = "num_classes"  # chance error is 1 - 1/num_classes
AT_CHANCE = 0.9  # an error >= 0.9 x chance error: the net has not learnt (near enough to chance)
TRAIN_IMAGES, TEST_IMAGES = "train_images", "test_images"  # the training set's size; the test error's n


class Cell(NamedTuple):
    """One run of the ablation: (variant, depth, seed)."""

    variant: str
    depth: int
    seed: int

    @property
    def name(self) -> str:
        """The cell key, identical in folders, DVC stage names (train@NAME) and W&B run names."""
        return f"{self.variant}-{self.depth}-{self.seed}"


def check(variant: str, depth: int, shortcut: str = "projection") -> int:
    """Validate one grid cell; return n, the number of blocks per stage."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; valid shortcuts: {', '.join(SHORTCUTS)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth {depth!r} is not 6n+2 with n >= 1; valid depths: 8, 14, 20, 26, 32, 44, 56, 110, 1202, ..."
        )
    return (depth - 2) // 6


def cells(params: Params) -> list[Cell]:
    """Every (variant, depth, seed), in the order DVC expands the train matrix: variants, depths, seeds."""
    g = params.grid
    return [Cell(*c) for c in itertools.product(g.variants, g.depths, g.seeds)]


def chance_error(num_classes: int | None) -> float | None:
    """The error of a guess: 1 - 1/classes (90 % on CIFAR-10); None where the classes are not known."""
    return 1 - 1 / num_classes if num_classes else None


def finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def metrics(
    cell: Cell,
    dataset: str,
    data_md5: str,
    num_classes: int,
    train_images: int,
    test_images: int,
    n_params: int,
    errors: dict,
    steps: int,
    epochs: int,
    wall_time_s: float,
    images_per_s: float,
    diverged_step: int | None,
    diagnostics: dict,
) -> dict:
    """A cell's metrics.json. `errors`: the split losses and errors by key (TRAIN_LOSS, ...);
    `diagnostics`: the scalar diagnostics ("init/shattering", ...)."""
    return {
        "variant": cell.variant,
        "depth": cell.depth,
        "seed": cell.seed,
        "dataset": dataset,
        "data_md5": data_md5,
        NUM_CLASSES: num_classes,
        TRAIN_IMAGES: train_images,
        TEST_IMAGES: test_images,
        "params": n_params,
        # a diverged net's weights are not finite: its errors are argmaxes of NaN logits, not results
        **{
            k: None if diverged_step is not None else finite(errors.get(k))
            for k in (TRAIN_LOSS, TRAIN_ERROR, VAL_LOSS, VAL_ERROR, TEST_LOSS, TEST_ERROR)
        },
        "steps": steps,
        "epochs": epochs,
        WALL_TIME: round(wall_time_s, 2),
        IMAGES_PER_S: finite(round(images_per_s, 1)),  # null when a resumed run had no step left
        DIVERGED: diverged_step is not None,
        DIVERGED_STEP: diverged_step,
        **{k: v if isinstance(v, bool) else finite(v) for k, v in diagnostics.items()},
    }


def path(runs: Path, cell: Cell) -> Path:
    """Where a cell's metrics.json is, in the folder of the grid's cells."""
    return runs / cell.name / "metrics.json"
