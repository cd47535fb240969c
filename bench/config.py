"""params.yaml -> typed, frozen dataclasses; the only place config is typed and checked.

params.yaml holds the only copy of each default: the section classes (bench/schema.py) declare types and ranges,
not values. An
unknown or missing key, or a value out of its range, is an error naming it, and `section.key=value`
overrides any param from the command line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from bench import params_file
from bench.params_file import preset as preset  # `bench preset` and the tests: config.preset
from bench.params_file import shown
from bench.schema import (
    Curvature,
    Data,
    Diagnostics,
    Grid,
    Landscape,
    LrSweep,
    Model,
    Paths,
    Speed,
    Toy,
    Train,
    Trainer,
    Wandb,
)


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
    curvature: Curvature
    paths: Paths
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
