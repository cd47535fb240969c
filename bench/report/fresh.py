"""A report only over cells that its params and this code trained: each cell's metrics.json records its run key
(bench.run_key), and a cell whose key is not the one these params and the train stage's code give is stale (params.yaml
or the code changed, and it was not retrained). Apart from bench.run_key, whose every line is hashed into the key."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.code import code_hash
from bench.config import Params
from bench.record import Metrics
from bench.run_key import RUN_SECTIONS, TRAIN_ENTRY, run_key
from bench.train.settings import resolved


def stale(params: Params, records: list[Metrics]) -> list[Metrics]:
    """The cells among `records` (their metrics.json) that these params and this code did not train."""
    code = code_hash(TRAIN_ENTRY)
    return [m for m in records if m.run_key != run_key(params, m.cell, m.data_md5, code)]


def differences(params: Params, config_yaml: Path) -> list[str]:
    """'train.lr=0.02 there, 0.1 here' for each value of the run sections that a cell's config.yaml (the params it
    ran with) records otherwise than `params`; [] where it records none otherwise, or cannot be read."""
    try:
        ran = yaml.safe_load(config_yaml.read_text())
    except (OSError, yaml.YAMLError):
        return []
    now = {s: v for s, v in resolved(params).items() if s in RUN_SECTIONS}  # as config.yaml records them
    return [
        f"{section}.{k}={ran[section][k]} there, {v} here"
        for section, values in now.items()
        for k, v in values.items()
        if isinstance(ran, dict) and isinstance(ran.get(section), dict) and k in ran[section] and ran[section][k] != v
    ]


def check_fresh(params: Params, runs: Path, records: list[Metrics]) -> None:
    """A ValueError naming the cells that other params or code trained (stale results: params.yaml or the train
    stage's code changed, and they were not retrained), and the first one's params that differ."""
    old = stale(params, records)
    if not old:
        return
    names = ", ".join(m.cell.name for m in old[:3]) + (", ..." if len(old) > 3 else "")
    differ = differences(params, runs / old[0].cell.name / "config.yaml")
    why = f"{old[0].cell.name} ran with {'; '.join(differ[:3])}" if differ else "the train stage's code or the data"
    raise ValueError(
        f"{len(old)} of {len(records)} cells were trained with other params, data or code than these ({names}): "
        f"{why}. Their results are stale: retrain them (`bench grid` or `dvc repro`), or use the params they ran with"
    )
