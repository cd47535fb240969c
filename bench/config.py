"""params.yaml -> typed, frozen dataclasses; the only place config is read.

params.yaml holds the only copy of each default: these classes declare types, not values. An unknown
or missing key is an error naming it, and `section.key=value` overrides any param from the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Grid:
    variants: list[str]  # the ablation axes; dvc.yaml's train matrix reads these
    depths: list[int]
    seeds: list[int]


@dataclass(frozen=True)
class Data:
    name: str  # digits | cifar10 | cifar100 | imagefolder
    source: str | None  # URL, local path or DVC-tracked file; null = the dataset's default
    md5: str | None  # expected archive checksum; null = the official one
    val_size: int  # images held out of the training split for validation
    max_image_pixels: int  # an image larger than this is refused before any is decoded (decompression bombs)
    max_total_pixels: int  # and so is a dataset larger than this in all


@dataclass(frozen=True)
class Model:
    shortcut: str  # projection (option B) | zero_pad (option A)
    zero_init_residual: bool  # start each residual branch at zero (its last BN scale, or conv without BN)


@dataclass(frozen=True)
class Train:
    batch_size: int  # global batch, split across ranks
    augment: bool  # random crop with padding, plus flips where the dataset suits them
    max_steps: int  # iterations, as He et al. count them
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    milestones: list[int]  # iterations at which lr is multiplied by gamma
    gamma: float
    warmup_steps: int  # linear warm-up from 0 to lr over this many iterations
    low_lr: float | None  # constant low-lr warm-up (He et al., ResNet-110) ...
    low_lr_steps: int  # ... for this many iterations ...
    low_lr_min_depth: int  # ... for nets at least this deep


@dataclass(frozen=True)
class Trainer:
    accelerator: str  # Lightning Trainer flags
    devices: Any  # int, list of ids, or "auto"
    num_nodes: int
    strategy: str  # auto | ddp | ddp_spawn | ...
    sync_batchnorm: bool  # BN statistics over the global batch instead of each process's share
    precision: str
    deterministic: bool
    benchmark: bool | None  # cuDNN's autotuner; null: Lightning's default (off)
    log_every_n_steps: int
    check_val_every_n_epoch: int


@dataclass(frozen=True)
class Speed:
    compile: str | None  # torch.compile mode for the network in training; null: eager
    channels_last: bool  # NHWC memory format for the network and its inputs
    eval_batch_size: int  # validation and test batches, per process; the results do not depend on it
    threads: int  # CPU threads per process (torch.set_num_threads); a CPU result's bits depend on it


@dataclass(frozen=True)
class Diagnostics:
    probe_size: int  # test images in the fixed probe batch, stratified by class
    probe_seed: int  # which images: the same for every cell
    pairs: int  # image pairs whose connecting paths measure shattering
    points: int  # input points along each path
    every: int  # also measure every N epochs; 0: only at initialisation and at the end


@dataclass(frozen=True)
class Toy:
    depths: list[int]  # fully connected layers
    seeds: int  # networks per depth
    width: int
    points: int  # equally spaced scalar inputs on [-2, 2]


@dataclass(frozen=True)
class LrSweep:
    depth: int  # one depth, every variant of the grid
    lrs: list[float]
    max_steps: int


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
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ValueError(f"{where}={value!r} must be a finite number")
    return value


# The range of every number and list in params.yaml: a value outside it is refused, naming the key and
# the range. For a list, the rule holds for each element; "non-empty" for the list itself.
RANGES = {
    "grid.variants": ["non-empty"],
    "grid.depths": ["non-empty"],
    "grid.seeds": ["non-empty", ">= 0"],
    "data.val_size": [">= 0"],
    "data.max_image_pixels": [">= 1"],
    "data.max_total_pixels": [">= 1"],
    "train.batch_size": [">= 1"],
    "train.max_steps": [">= 1"],
    "train.lr": ["> 0"],
    "train.momentum": [">= 0", "< 1"],
    "train.weight_decay": [">= 0"],
    "train.milestones": [">= 1"],
    "train.gamma": ["> 0"],
    "train.warmup_steps": [">= 0"],
    "train.low_lr": ["> 0"],
    "train.low_lr_steps": [">= 0"],
    "train.low_lr_min_depth": [">= 8"],
    "trainer.num_nodes": [">= 1"],
    "trainer.log_every_n_steps": [">= 1"],
    "trainer.check_val_every_n_epoch": [">= 1"],
    "speed.eval_batch_size": [">= 1"],
    "speed.threads": [">= 1"],
    "diagnostics.probe_size": [">= 2"],
    "diagnostics.probe_seed": [">= 0"],
    "diagnostics.pairs": [">= 1"],
    "diagnostics.points": [">= 3"],
    "diagnostics.every": [">= 0"],
    "toy.depths": ["non-empty", ">= 1"],
    "toy.seeds": [">= 1"],
    "toy.width": [">= 1"],
    "toy.points": [">= 3"],
    "lr_sweep.depth": [">= 8"],
    "lr_sweep.lrs": ["non-empty", "> 0"],
    "lr_sweep.max_steps": [">= 1"],
}
_WORDS = {">=": "at least", ">": "above", "<": "below", "<=": "at most"}
_TESTS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<": lambda v, b: v < b, "<=": lambda v, b: v <= b}


def _check_ranges(params: Params) -> None:
    for key, rules in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(params, section), name)
        if "non-empty" in rules and value == []:
            raise ValueError(f"{key} is empty: it needs at least one value")
        bounds = [r.split() for r in rules if r != "non-empty"]
        text = " and ".join(f"{_WORDS[op]} {b}" for op, b in bounds)
        for v in value if isinstance(value, list) else [value]:
            if (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and not all(_TESTS[op](v, float(b)) for op, b in bounds)
            ):
                raise ValueError(
                    f"{key}={value!r} must be {text}" + (" (each value)" if isinstance(value, list) else "")
                )
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
    d = params.trainer.devices  # a count (-1: all), a list of ids, or a string Lightning reads ("auto", "0,1")
    if (
        isinstance(d, bool)
        or (isinstance(d, int) and d < 1 and d != -1)
        or d == []
        or (isinstance(d, list) and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in d))
    ):
        raise ValueError(
            f"trainer.devices={d!r} must be a count of at least 1 (-1: all), a non-empty list of "
            f"device ids (each at least 0), or a string such as auto"
        )


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of keys, got {raw!r}")
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
            raise ValueError(f"override {item!r} is not section.key=value")
        if section not in raw or not isinstance(raw[section], dict):
            raise ValueError(f"unknown key {section} in override {item!r}; valid sections: {', '.join(raw)}")
        if name not in raw[section]:
            raise ValueError(f"unknown key {key} in override {item!r}; valid keys: {', '.join(raw[section])}")
        try:
            raw[section][name] = value if _is_text(section, name) and value not in ("null", "~") else _yaml(value)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: {value!r} is not a YAML value ({str(e).splitlines()[0]})") from None
    return raw


def _is_text(section: str, name: str) -> bool:
    """Whether params `section.name` is typed str: its override is kept verbatim (an all-digit md5 stays text)."""
    cls = typing.get_type_hints(Params).get(section)
    tp = typing.get_type_hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))


def preset(path: str | Path) -> list[str]:
    """A preset file (params.yaml's layout, holding only the keys it sets) as section.key=value overrides.
    Values are written as compact JSON, which YAML reads back: no spaces, so each override is one word."""
    raw = _read_yaml(Path(path))
    return [
        f"{section}.{key}=" + (value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        for section, keys in raw.items()
        for key, value in (keys or {}).items()
    ]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last silently),
    and reading every float a person writes as a float: YAML 1.1 (PyYAML) reads 1e-3 and 1E-4 as strings,
    since its floats need a dot; YAML 1.2's do not."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(  # after 1.1's own: an exponent without a dot (1e-3, 2E4, -1.5e+2 is 1.1's)
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _read_yaml(path: Path) -> dict:
    try:
        raw = _yaml(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"params file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"params file {path} cannot be read ({type(e).__name__}: {e})") from None
    except yaml.YAMLError as e:  # one line: what, and where
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections (grid, data, ...), got {raw!r}")
    return raw


def load(path: str | Path = "params.yaml", overrides: list[str] = ()) -> Params:
    """Read, override and type-check params; raise ValueError naming the first bad key or value."""
    params = _build(Params, apply_overrides(_read_yaml(Path(path)), list(overrides)), "")
    _check_ranges(params)
    return params


def sections(params: Params, names) -> dict:
    """{section: its keys and values} for the named sections, as plain data (JSON, W&B config, hashing)."""
    return {name: dataclasses.asdict(getattr(params, name)) for name in names}
