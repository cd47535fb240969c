"""What a cell runs with, stated before it trains: the resolved params in its folder (config.yaml) and one line
that sums them up; the same params go to its W&B run's config."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench import config
from bench.config import Params
from bench.files import redact, write_text
from bench.record import Cell
from bench.run_key import RUN_SECTIONS

CONFIG = "config.yaml"  # in the cell's folder: every value the run read, defaults and overrides resolved
SECTIONS = (*RUN_SECTIONS, "speed")  # what decides the result (the run key's), and how fast it ran


def resolved(params: Params) -> dict:
    """The sections, with credentials in a data.source URL redacted (they are sent, never recorded)."""
    out = config.sections(params, SECTIONS)
    if isinstance(out["data"].get("source"), str):
        out["data"]["source"] = redact(out["data"]["source"])
    return out


def write(out: Path, params: Params, cell: Cell) -> None:
    header = f"# {cell.name}: the params this run read, resolved (params.yaml and its overrides)\n"
    write_text(out / CONFIG, header + yaml.safe_dump({"cell": cell._asdict(), **resolved(params)}, sort_keys=False))


def summary(params: Params, cell: Cell, data_name: str, data_md5: str) -> str:
    """'residual_bn-56-0: digits (md5 1a2b3c4d), 150 steps at batch 64, lr 0.02 (x0.1 at 100, 125), ...'."""
    t, tr = params.train, params.trainer
    schedule = f" (x{t.gamma:g} at {', '.join(map(str, t.milestones))})" if t.milestones else ""
    return (
        f"{cell.name}: {data_name} (md5 {data_md5[:8]}), {t.max_steps} steps at batch {t.batch_size}, "
        f"lr {t.lr:g}{schedule}, {params.model.shortcut} shortcuts, {tr.accelerator} x{tr.devices} {tr.precision}"
    )


def wandb_config(params: Params, cell: Cell, data_md5: str, env: dict) -> dict:
    """The W&B run's config: the resolved sections, the cell, the data and the environment."""
    return {**resolved(params), "cell": cell._asdict(), "data_md5": data_md5, **env}
