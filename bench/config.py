"""params.yaml -> typed, frozen dataclasses; the only place config is read.

params.yaml holds the only copy of each default: these classes declare types, not values. An unknown
or missing key is an error naming it, and `section.key=value` overrides any param from the command line.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import yaml


@dataclass(frozen=True)
class Grid:
    variants: list[str]  # the ablation axes; dvc.yaml's train matrix reads these
    depths: list[int]
    seeds: list[int]


@dataclass(frozen=True)
class Data:
    name: str  # digits | cifar10 | cifar100 | imagefolder
    source: Optional[str]  # URL, local path or DVC-tracked file; null = the dataset's default
    md5: Optional[str]  # expected archive checksum; null = the official one
    val_size: int  # images held out of the training split for validation


@dataclass(frozen=True)
class Model:
    shortcut: str  # projection (option B) | zero_pad (option A)


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
    low_lr: Optional[float]  # constant low-lr warm-up (He et al., ResNet-110) ...
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
    log_every_n_steps: int
    check_val_every_n_epoch: int


@dataclass(frozen=True)
class Speed:
    compile: Optional[str]  # torch.compile mode for the network in training; null: eager
    channels_last: bool  # NHWC memory format for the network and its inputs
    eval_batch_size: int  # validation and test batches, per process; the results do not depend on it


@dataclass(frozen=True)
class Diagnostics:
    probe_size: int  # the first N test images form the fixed probe batch
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
    mode: Optional[str]  # online | offline | disabled; null: online if WANDB_API_KEY is set, else offline
    project: Optional[str]  # null: $WANDB_PROJECT, else "bench"
    entity: Optional[str]  # null: $WANDB_ENTITY, else your default entity
    group: Optional[str]  # null: dataset, protocol and DVC experiment name
    dir: Optional[str]  # null: $WANDB_DIR, else the DVC repo root


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
    return value


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
        raw[section][name] = value if _is_text(section, name) and value not in ("null", "~") else yaml.safe_load(value)
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
    return [f"{section}.{key}=" + (value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
            for section, keys in raw.items() for key, value in (keys or {}).items()]


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"params file {path} not found") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections (grid, data, ...), got {raw!r}")
    return raw


def load(path: str | Path = "params.yaml", overrides: list[str] = ()) -> Params:
    """Read, override and type-check params; raise ValueError naming the first bad key or value."""
    return _build(Params, apply_overrides(_read_yaml(Path(path)), list(overrides)), "")


def sections(params: Params, names) -> dict:
    """{section: its keys and values} for the named sections, as plain data (JSON, W&B config, hashing)."""
    return {name: dataclasses.asdict(getattr(params, name)) for name in names}
