"""The record of one cell of the grid: its name, its metrics.json as a typed record, and one loader of its folder.

Every stage that writes or reads a cell's results (train, lr-sweep, report, W&B, the CLI) takes the names from
here. Errors are fractions in [0, 1]; a value that is not finite is recorded as null, since JSON has no NaN.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

if TYPE_CHECKING:
    from bench.config import Params

VARIANTS = {  # the grid's variant names: (skip connection, batch normalisation); bench.models builds them
    "plain": (False, False),
    "plain_bn": (False, True),
    "residual": (True, False),
    "residual_bn": (True, True),
    "residual_fixup": (True, False),  # `residual`, initialised by Fixup (Zhang et al. 2019): see models.fixup_init
    "residual_preact": (True, True),  # BN and ReLU before each conv (He et al. 2016b): see models.PreActBlock
}
SHORTCUTS = ("projection", "zero_pad")  # He et al.'s option B (1x1 conv) and option A (parameter-free)
SPLITS = ("train", "val", "test")
TRAIN_LOSS, TRAIN_ERROR = "train/loss", "train/error"
VAL_LOSS, VAL_ERROR = "val/loss", "val/error"
TEST_LOSS, TEST_ERROR = "test/loss", "test/error"
CLEAN_TRAIN_ERROR = "train/clean_error"  # the final weights on the training split: eval mode, no augmentation
DIVERGED, DIVERGED_STEP = "diverged", "diverged_step"  # a non-finite loss, and the step it first appeared at
GAP = "gap"  # test error - training error: the generalisation gap
PREDICTIONS = "predictions.safetensors"  # each image's predicted class and label: bench/train/predictions.py
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
            f"depth {depth!r} is not 6n+2 with n >= 1; valid depths: 8, 14, 20, 26, 32, 38, 44, 50, 56, ..., 110, ..."
        )
    return (depth - 2) // 6


def cells(params: Params) -> list[Cell]:
    """Every (variant, depth, seed), in the order DVC expands the train matrix: variants, depths, seeds."""
    g = params.grid
    return [Cell(*c) for c in itertools.product(g.variants, g.depths, g.seeds)]


def chance_error(num_classes: int | None) -> float | None:
    return 1 - 1 / num_classes if num_classes else None  # a guess's error (90 % on CIFAR-10); None: classes unknown


def finite(v) -> float | None:
    """`v` as a float, or None where it is missing or not finite: the one way a NaN becomes JSON's null."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


MOMENTS = ("init/", "end/")  # the scalar diagnostics' prefixes: at initialisation, after training


def key(name: str):
    """A field whose metrics.json key is `name` rather than the field's own name."""
    return field(metadata={"key": name})


@dataclass(frozen=True)
class Metrics:
    """A cell's metrics.json. The fields are in the file's order; `scalars` holds the scalar diagnostics
    ("init/shattering", "end/grad_ratio", ...; a diverged cell has no "end/..."), which follow them."""

    variant: str
    depth: int
    seed: int
    dataset: str
    data_md5: str
    num_classes: int
    train_images: int
    test_images: int  # the test error's n
    params: int
    train_loss: float | None = key(TRAIN_LOSS)
    train_error: float | None = key(TRAIN_ERROR)
    val_loss: float | None = key(VAL_LOSS)
    val_error: float | None = key(VAL_ERROR)
    test_loss: float | None = key(TEST_LOSS)
    test_error: float | None = key(TEST_ERROR)
    clean_train_error: float | None = key(CLEAN_TRAIN_ERROR)
    steps: int
    epochs: int
    wall_time_s: float
    images_per_s: float | None
    diverged: bool
    diverged_step: int | None
    run_key: str  # bench.run_key: the params, cell, data and code that trained it
    weights_sha256: str | None  # of the cell's weights.safetensors (bench.weights): what load() checks against
    scalars: dict[str, float | bool | None] = field(default_factory=dict)

    @property
    def cell(self) -> Cell:
        return Cell(self.variant, self.depth, self.seed)

    @property
    def gap(self) -> float | None:
        """The generalisation gap of the final weights: test error - their error on the training split (eval mode,
        no augmentation); None for a diverged cell. (history.csv's per-epoch "gap" is against the running,
        augmented training error of the epoch: a view of training, not this.)"""
        if self.test_error is None or self.clean_train_error is None:
            return None
        return self.test_error - self.clean_train_error

    def to_json(self) -> dict:
        """The metrics.json object, its keys in the file's order."""
        return {**{k: getattr(self, name) for k, name in KEYS.items()}, **self.scalars}

    @classmethod
    def from_json(cls, obj: dict) -> Metrics:
        """The record of a metrics.json object; a ValueError names a key missing, or one no cell writes."""
        if not isinstance(obj, dict):
            raise ValueError(f"a JSON object was expected, not {type(obj).__name__}")
        if missing := [k for k in KEYS if k not in obj]:
            raise ValueError(f"field {', '.join(map(repr, missing))} missing")
        if unknown := [k for k in obj if k not in KEYS and not k.startswith(MOMENTS)]:
            raise ValueError(f"field {', '.join(map(repr, unknown))} unknown")
        for k, v in obj.items():
            kind = TYPES.get(k, "float | bool | None")  # a scalar diagnostic: a number, a flag, or null
            if not typed(v, kind) or (k in ERROR_KEYS and v is not None and not 0 <= v <= 1):
                raise ValueError(f"field {k!r} is {v!r}, not {kind}" + (" in [0, 1]" if k in ERROR_KEYS else ""))
        scalars = {k: v for k, v in obj.items() if k not in KEYS}
        return cls(**{name: obj[k] for k, name in KEYS.items()}, scalars=scalars)


KEYS = {f.metadata.get("key", f.name): f.name for f in fields(Metrics) if f.name != "scalars"}  # JSON key -> field
TYPES = {k: f.type for k, f in zip(KEYS, fields(Metrics))}  # JSON key -> its type, as annotated: "float | None"
ERROR_KEYS = (TRAIN_ERROR, VAL_ERROR, TEST_ERROR, CLEAN_TRAIN_ERROR)  # fractions in [0, 1]
SPLIT_KEYS = (TRAIN_LOSS, TRAIN_ERROR, VAL_LOSS, VAL_ERROR, TEST_LOSS, TEST_ERROR, CLEAN_TRAIN_ERROR)


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
    run_key: str = "",
    weights_sha256: str | None = None,
) -> Metrics:
    """A finished cell's record. `errors`: the split losses and errors by key (TRAIN_LOSS, ...);
    `diagnostics`: the scalar diagnostics ("init/shattering", ...)."""
    return Metrics(
        *cell,
        dataset=dataset,
        data_md5=data_md5,
        num_classes=num_classes,
        train_images=train_images,
        test_images=test_images,
        params=n_params,
        # a diverged net's weights are not finite: its errors are argmaxes of NaN logits, not results
        **{KEYS[k]: None if diverged_step is not None else finite(errors.get(k)) for k in SPLIT_KEYS},
        steps=steps,
        epochs=epochs,
        wall_time_s=round(wall_time_s, 2),
        images_per_s=finite(round(images_per_s, 1)),  # null when a resumed run had no step left
        diverged=diverged_step is not None,
        diverged_step=diverged_step,
        run_key=run_key,
        weights_sha256=weights_sha256,
        scalars={k: v if isinstance(v, bool) else finite(v) for k, v in diagnostics.items()},
    )


@dataclass(frozen=True)
class Run:
    """Everything a finished cell's folder holds for the report, read once."""

    metrics: Metrics
    diagnostics: dict  # diagnostics.json: the probe, and per-block lists at each moment ("init", "end")
    env: dict  # env.json: versions, hardware, git commit, data checksum, precision, processes
    history: dict[str, list[float]]  # history.csv by column, one value per epoch; NaN where none was logged
    predictions: dict[str, np.ndarray] | None = None  # predictions.safetensors; None for a diverged cell

    @property
    def cell(self) -> Cell:
        return self.metrics.cell


def typed(value, kind: str) -> bool:
    """Whether a JSON value is of the annotated type `kind` ("int", "float | None", ...): a bool is no number, an int
    is a float, and a float is finite (metrics.json records a NaN as null)."""
    python = {"str": str, "int": int, "float": (int, float), "bool": bool, "None": type(None)}
    kinds = [python[k] for k in kind.split(" | ")]
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, tuple(kinds)) and not (isinstance(value, float) and not math.isfinite(value))


def path(runs: Path, cell: Cell) -> Path:
    """Where a cell's metrics.json is, in the folder of the grid's cells."""
    return runs / cell.name / "metrics.json"


HISTORY_COLUMNS = ("step", TRAIN_ERROR, TEST_ERROR)  # what the report draws from history.csv, one row per epoch
ENV_KEYS = ("versions", "hardware", "git", "data_md5", "precision", "world_size")  # what the report lists of env.json


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv by column; empty cells are NaN. A ValueError names a missing column or the value not a number."""
    cols: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            for k, v in row.items():
                try:
                    cols.setdefault(k, []).append(float(v) if v not in ("", None) else math.nan)
                except (TypeError, ValueError):
                    raise ValueError(f"field {k!r} on line {line} is {v!r}, not a number") from None
    if missing := [k for k in HISTORY_COLUMNS if k not in cols]:
        raise ValueError(f"field {missing[0]!r} is missing" + ("" if cols else ": no rows, or no header"))
    return cols


def read_object(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object with each of `keys`; a ValueError names the first one missing."""
    obj = json.loads(path.read_text())
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON object was expected, not {type(obj).__name__}")
    if missing := [k for k in keys if k not in obj]:
        raise ValueError(f"field {missing[0]!r} is missing")
    return obj


def read(folder: Path, name: str, reader):
    """`reader` of the file `name` in a cell's folder; any error is one line naming the file and how to redo it."""
    try:
        return reader(folder / name)
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, SafetensorError) as e:
        what = str(e) if type(e) is ValueError else f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        what = " ".join(what.split())  # one line
        raise ValueError(
            f"{folder} is not a finished cell ({what} in {folder / name}); rerun it (dvc repro train@{folder.name})"
        ) from None


def load(runs: Path, cell: Cell) -> Run:
    """A finished cell's folder: metrics.json, diagnostics.json, env.json, history.csv and, unless it diverged,
    predictions.safetensors. A missing or unreadable file, or a field not as bench train writes it, is a ValueError
    of one line naming the file, the field and how to redo the cell."""
    folder = runs / cell.name
    if not path(runs, cell).exists():
        raise ValueError(f"no results for cell {cell.name}: {path(runs, cell)} is missing (run `dvc repro`)")
    m = read(folder, "metrics.json", lambda p: Metrics.from_json(json.loads(p.read_text())))
    if m.cell != cell:  # a folder copied or renamed by hand
        raise ValueError(
            f"{path(runs, cell)} is cell {m.cell.name}'s (its variant, depth and seed), not its folder's {cell.name}: "
            f"a folder copied or renamed by hand; rerun it (dvc repro train@{cell.name})"
        )
    diagnostics = read(folder, "diagnostics.json", lambda p: read_object(p, ("probe", "init")))
    env = read(folder, "env.json", lambda p: read_object(p, ENV_KEYS))
    history = read(folder, "history.csv", read_history)
    predictions = read(folder, PREDICTIONS, lambda p: load_file(str(p))) if not m.diverged else None
    return Run(m, diagnostics, env, history, predictions)
