"""A cell's run key: a hash of everything that determines its result, so that a result, or a checkpoint, of other
params, data or code is never taken for this one's.

The key hashes the params a cell's result depends on (not `speed`, which changes how fast, never what: a cell
killed while compiled may resume eager), the cell, the checksum of its data and the code that trains it (the import
closure of the train stage, bench.code). A checkpoint is resumed only under its own key (bench.train.resume), and
the report refuses a cell whose metrics.json records another key than these params and this code give.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from bench.code import code_hash
from bench.config import Params, sections
from bench.files import redact
from bench.record import Cell, Metrics

RUN_SECTIONS = ("data", "model", "train", "trainer", "diagnostics")
TRAIN_ENTRY = "bench.train.stage"  # the code a cell's result depends on: this module's import closure (bench.code)


def run_key(params: Params, cell: Cell, data_md5: str, code: str | None = None) -> str:
    """The key; `code`: code_hash(TRAIN_ENTRY), when the caller has it already (it reads every file it hashes)."""
    identity = {
        "params": sections(params, RUN_SECTIONS),
        "cell": list(cell),
        "data_md5": data_md5,
        "code": code or code_hash(TRAIN_ENTRY),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


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
    now = sections(params, RUN_SECTIONS)
    if isinstance(now["data"].get("source"), str):  # as config.yaml records it: a URL's credentials redacted
        now["data"]["source"] = redact(now["data"]["source"])
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
