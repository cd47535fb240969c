"""params.yaml's sections as frozen dataclasses: each key's type, and its range declared beside it (`ranged`).

params.yaml holds every default; bench/config.py builds these from it, checks them and applies overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import ge, gt, le, lt
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a number may take (for a list, each of its numbers), whether a list may be empty or repeat one."""

    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    non_empty: bool = False
    unique: bool = False  # a list's values: a seed written twice is one run counted twice

    def holds(self, v: float) -> bool:
        checks = ((self.at_least, ge), (self.above, gt), (self.below, lt), (self.at_most, le))
        return all(bound is None or test(v, bound) for bound, test in checks)

    def __str__(self) -> str:
        bounds = {"at least": self.at_least, "above": self.above, "below": self.below, "at most": self.at_most}
        return " and ".join(f"{word} {b}" for word, b in bounds.items() if b is not None)


def ranged(**bounds) -> Any:
    """A field whose value must lie in Range(**bounds): the range is declared next to the field it checks."""
    return field(metadata={"range": Range(**bounds)})


DEPTH_MAX = 1202  # He et al.'s deepest net
STEPS_MAX = 10**7  # iterations (He et al.: 64,000)
LR_MAX = 10_000  # far past divergence, which tests/test_train.py provokes with 1000
SEED_END = 2**32  # numpy's seeds are below it


@dataclass(frozen=True)
class Grid:
    variants: list[str] = ranged(non_empty=True, unique=True)  # the ablation axes; dvc.yaml's train matrix reads these
    depths: list[int] = ranged(non_empty=True, unique=True, at_most=DEPTH_MAX)
    seeds: list[int] = ranged(non_empty=True, unique=True, at_least=0, below=SEED_END)


@dataclass(frozen=True)
class Data:
    name: str  # digits | cifar10 | cifar100 | imagefolder
    source: str | None  # URL, local path or DVC-tracked file; null = the dataset's default
    md5: str | None  # expected archive checksum; null = the official one
    val_size: int = ranged(at_least=0, at_most=10**7)  # images held out of the training split for validation
    max_image_pixels: int = ranged(at_least=1, at_most=2**31)  # larger: refused undecoded (decompression bombs)
    max_total_pixels: int = ranged(at_least=1, at_most=10**12)  # and so is a dataset larger than this in all


@dataclass(frozen=True)
class Model:
    shortcut: str  # projection (option B) | zero_pad (option A)
    zero_init_residual: bool  # start each residual branch at zero (its last BN scale, or conv without BN)


@dataclass(frozen=True)
class Train:
    batch_size: int = ranged(at_least=1, at_most=2**20)  # global batch, split across ranks
    augment: bool  # random crop with padding, plus flips where the dataset suits them
    max_steps: int = ranged(at_least=1, at_most=STEPS_MAX)  # iterations, as He et al. count them
    lr: float = ranged(above=0, at_most=LR_MAX)
    momentum: float = ranged(at_least=0, below=1)
    weight_decay: float = ranged(at_least=0, at_most=1000)
    nesterov: bool
    milestones: list[int] = ranged(at_least=1, at_most=STEPS_MAX)  # iterations at which lr is multiplied by gamma
    gamma: float = ranged(above=0, at_most=10)
    warmup_steps: int = ranged(at_least=0, at_most=STEPS_MAX)  # linear warm-up from 0 to lr over this many iterations
    low_lr: float | None = ranged(above=0, at_most=LR_MAX)  # constant low-lr warm-up (He et al., ResNet-110) ...
    low_lr_steps: int = ranged(at_least=0, at_most=STEPS_MAX)  # ... for this many iterations ...
    low_lr_min_depth: int = ranged(at_least=8, at_most=DEPTH_MAX)  # ... for nets at least this deep


@dataclass(frozen=True)
class Trainer:
    accelerator: str  # Lightning Trainer flags
    devices: Any  # int, list of ids, or "auto"
    num_nodes: int = ranged(at_least=1, at_most=1024)
    strategy: str  # auto | ddp | ddp_spawn: the names bench.validate accepts, as for accelerator and precision
    sync_batchnorm: bool  # BN statistics over the global batch instead of each process's share
    precision: str
    deterministic: bool
    benchmark: bool | None  # cuDNN's autotuner; null: Lightning's default (off)
    log_every_n_steps: int = ranged(at_least=1, at_most=STEPS_MAX)
    check_val_every_n_epoch: int = ranged(at_least=1, at_most=STEPS_MAX)


@dataclass(frozen=True)
class Speed:
    compile: str | None  # torch.compile mode for the network in training; null: eager
    channels_last: bool  # NHWC memory format for the network and its inputs
    eval_batch_size: int = ranged(at_least=1, at_most=2**20)  # per process; results do not depend on it
    threads: int = ranged(at_least=1, at_most=1024)  # CPU threads per process; a CPU result's bits depend on it


@dataclass(frozen=True)
class Diagnostics:
    probe_size: int = ranged(at_least=2, at_most=100_000)  # test images in the fixed probe batch, stratified by class
    probe_seed: int = ranged(at_least=0, below=SEED_END)  # which images: the same for every cell
    pairs: int = ranged(at_least=1, at_most=50_000)  # image pairs whose connecting paths measure shattering
    points: int = ranged(at_least=3, at_most=10_000)  # input points along each path
    every: int = ranged(at_least=0, at_most=STEPS_MAX)  # also every N epochs; 0: at the start and end only


@dataclass(frozen=True)
class Toy:
    depths: list[int] = ranged(non_empty=True, unique=True, at_least=1, at_most=256)  # fully connected layers
    seeds: int = ranged(at_least=1, at_most=1000)  # networks per depth
    width: int = ranged(at_least=1, at_most=2048)
    points: int = ranged(at_least=3, at_most=10_000)  # equally spaced scalar inputs on [-2, 2]


@dataclass(frozen=True)
class LrSweep:
    depth: int = ranged(at_least=8, at_most=DEPTH_MAX)  # one depth, every variant of the grid
    lrs: list[float] = ranged(non_empty=True, unique=True, above=0, at_most=LR_MAX)
    max_steps: int = ranged(at_least=1, at_most=STEPS_MAX)


@dataclass(frozen=True)
class Landscape:
    variants: list[str] = ranged(non_empty=True, unique=True)  # of grid.variants, at every depth of the grid
    seeds: list[int] = ranged(non_empty=True, unique=True, at_least=0, below=SEED_END)  # of grid.seeds
    resolution: int = ranged(at_least=3, at_most=201)  # points per axis of the 1-D and 2-D plots (the paper: 51)
    span: float = ranged(above=0, at_most=100)  # the plots cover [-span, span] along each direction
    subset: int = ranged(at_least=1, at_most=100_000)  # training images the loss is averaged over
    seed: int = ranged(at_least=0, below=SEED_END)  # the directions' and the subset's


@dataclass(frozen=True)
class Wandb:
    mode: str | None  # online | offline | disabled; null: online if WANDB_API_KEY is set, else offline
    project: str | None  # null: $WANDB_PROJECT, else "bench"
    entity: str | None  # null: $WANDB_ENTITY, else your default entity
    group: str | None  # null: dataset, protocol and DVC experiment name
    dir: str | None  # null: $WANDB_DIR, else the DVC repo root


@dataclass(frozen=True)
class Curvature:
    variants: list[str] = ranged(non_empty=True, unique=True)  # of grid.variants, at every depth of the grid
    seeds: list[int] = ranged(non_empty=True, unique=True, at_least=0, below=SEED_END)  # of grid.seeds
    subset: int = ranged(at_least=1, at_most=100_000)  # training images: the fixed batch the loss is taken on
    samples: int = ranged(at_least=1, at_most=10_000)  # Hutchinson's random vectors for the trace
    seed: int = ranged(at_least=0, below=SEED_END)  # the batch's, the vectors' and the Lanczos start's


@dataclass(frozen=True)
class Paths:
    variants: list[str] = ranged(non_empty=True, unique=True)  # residual variants of grid.variants, every depth
    seeds: list[int] = ranged(non_empty=True, unique=True, at_least=0, below=SEED_END)  # of grid.seeds
    subset: int = ranged(at_least=1, at_most=100_000)  # training images: the batch whose input gradient is taken
    samples: int = ranged(at_least=1, at_most=10_000)  # random sets of k blocks per path length k
    seed: int = ranged(at_least=0, below=SEED_END)  # the batch's and the sets'
