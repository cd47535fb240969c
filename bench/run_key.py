"""A cell's run key: a hash of everything that determines its result, so that a result, or a checkpoint, of other
params, data or code is never taken for this one's.

The key hashes the params a cell's result depends on (not `speed`, which changes how fast, never what: a cell
killed while compiled may resume eager), the cell, the checksum of its data and the code that trains it (the import
closure of the train stage, bench.code). A checkpoint is resumed only under its own key (bench.train.resume), and
the report refuses a cell whose metrics.json records another key than its params and this code give
(bench/report/fresh.py). Only what makes the key belongs here: the train stage imports this module, so all of it is
hashed into every key.
"""

from __future__ import annotations

import hashlib
import json

from bench.code import code_hash
from bench.config import Params, sections
from bench.record import Cell

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
