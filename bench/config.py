"""params.yaml -> typed, frozen dataclasses; the only place config is typed and checked.

params.yaml holds the only copy of each default: these classes declare types and ranges, not values. An
unknown or missing key, or a value out of its range, is an error naming it, and `section.key=value`
overrides any param from the command line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from operator import ge, gt, le, lt
from pathlib import Path
from typing import Any

import yaml

from bench import params_file
from bench.params_file import preset as preset  # `bench preset` and the tests: config.preset
from bench.params_file import shown


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
class Params:
    grid: Grid
    data: Data
    model: Model
    train: Train
    trainer: Trainer
    speed: Speed
    diagnostics: Diagnostics
    toy: Toy
    lr_sweep: LrSweep
    landscape: Landscape
    wandb: Wandb


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return `value` as type `tp` (int is accepted for float), or raise ValueError naming `where`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _check_type(value, next(a for a in args if a is not type(None)), where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {shown(value)}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {tp.__name__}, got {shown(value)}")
    if tp is float and not math.isfinite(value):
        raise ValueError(f"{where}={value!r} must be a finite number")
    return value


def _check_ranges(params: Params) -> None:
    """Every field's declared Range, then the rules between fields; raise ValueError naming the key and its range."""
    for section in fields(params):
        cfg = getattr(params, section.name)
        for f in fields(cfg):
            if (r := f.metadata.get("range")) is None:
                continue
            key, value = f"{section.name}.{f.name}", getattr(cfg, f.name)
            if r.non_empty and value == []:
                raise ValueError(f"{key} is empty: it needs at least one value")
            if r.unique and (twice := [v for i, v in enumerate(value) if v in value[:i]]):
                raise ValueError(f"{key}={shown(value)} holds {shown(twice[0])} twice: each value once")
            numbers = [v for v in (value if isinstance(value, list) else [value]) if _is_number(v)]
            if bad := [v for v in numbers if not r.holds(v)]:
                each = f" (each value; {shown(bad[0])} is not)" if isinstance(value, list) else ""
                raise ValueError(f"{key}={shown(value)} must be {r}{each}")
    _check_rules(params)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_rules(params: Params) -> None:
    """The rules that tie fields together (the trainer's flags: bench.validate)."""
    dg = params.diagnostics
    if 2 * dg.pairs > dg.probe_size:
        raise ValueError(
            f"diagnostics.pairs={dg.pairs} needs {2 * dg.pairs} probe images, but diagnostics.probe_size="
            f"{dg.probe_size}: each pair is two distinct images of the probe"
        )
    if params.trainer.benchmark and params.trainer.deterministic:
        raise ValueError(
            "trainer.benchmark=true with trainer.deterministic=true: cuDNN's autotuner picks kernels by "
            "timing them, so runs would not repeat; set trainer.deterministic=false for speed"
        )
    if params.train.nesterov and params.train.momentum == 0:
        raise ValueError("train.nesterov=true with train.momentum=0: Nesterov momentum needs a momentum above 0")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of keys, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ValueError(f"unknown key {where + '.' if where else ''}{unknown[0]}; valid keys: {', '.join(names)}")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"missing key {where + '.' if where else ''}{missing[0]}")
    values = {}
    for name in names:
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        values[name] = _build(tp, raw[name], key) if dataclasses.is_dataclass(tp) else _check_type(raw[name], tp, key)
    return cls(**values)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) to a copy of the raw params."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            whole = " (a whole section is not overridden)" if sep and not dot else ""
            raise ValueError(f"override {shown(item)} is not section.key=value{whole}")
        if section not in raw:
            raise ValueError(f"unknown key {section} in override {shown(item)}; valid sections: {', '.join(raw)}")
        if not isinstance(raw[section], dict):
            raise ValueError(f"{section}: expected a mapping of keys, got {shown(raw[section])}")
        if name not in raw[section]:
            raise ValueError(f"unknown key {key} in override {shown(item)}; valid keys: {', '.join(raw[section])}")
        text = _is_text(section, name) and value not in ("null", "~")
        try:
            raw[section][name] = value if text else params_file.parse(value)
        except params_file.Unsupported as e:
            raise ValueError(f"override {shown(item)}: {e.problem} in params") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ValueError(f"override {shown(item)}: {shown(value)} is not a YAML value ({first})") from None
    return raw


def _is_text(section: str, name: str) -> bool:
    """Whether params `section.name` is typed str: its override is kept verbatim (an all-digit md5 stays text)."""
    cls = typing.get_type_hints(Params).get(section)
    tp = typing.get_type_hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))


def load(path: str | Path = "params.yaml", overrides: list[str] = ()) -> Params:
    """Read, override and type-check params; raise ValueError naming the first bad key or value."""
    params = _build(Params, apply_overrides(params_file.read(Path(path)), list(overrides)), "")
    _check_ranges(params)
    return params


def sections(params: Params, names) -> dict:
    """{section: its keys and values} for the named sections, as plain data (JSON, W&B config, hashing)."""
    return {name: dataclasses.asdict(getattr(params, name)) for name in names}
