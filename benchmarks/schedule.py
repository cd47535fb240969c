"""Which schedule trains every residual_bn-56 seed? Retrain residual_bn-56 at every seed of grid.seeds under a few
candidate schedules (batch, lr, iterations, milestones, warm-up), and count the seeds that stall: whose final
clean training error stays above STALLED while the others train.

    python benchmarks/schedule.py              # train, write perf/schedule/residual_bn-56.json, print the table
    python benchmarks/schedule.py --table      # the table from that JSON only
    python benchmarks/schedule.py --write      # ... also written into docs/claims.md between its markers
    python benchmarks/schedule.py --check      # exit 1 where docs/claims.md's block differs from the JSON

A stalled seed is the one that decides a cell's mean: residual_bn-56 at batch 128 and lr 0.05 had one seed at
36 % test error beside four at 3 to 6 %, because the lr fell tenfold while it was still on the initial plateau.
Each schedule's cells are trained by `bench train` with params.yaml's own settings and the schedule's overrides,
two at a time, one thread each, in a scratch folder. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blocks
import seeds as seeds_study

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
OUT = ROOT / "perf/schedule/residual_bn-56.json"
DOCUMENT = ROOT / "docs/claims.md"
BEGIN, END = "<!-- schedules -->", "<!-- end of schedules -->"
sys.path.insert(0, str(ROOT))

from bench import config, record  # noqa: E402
from bench.provenance import environment  # noqa: E402

VARIANT, DEPTH = "residual_bn", 56
STALLED = 0.2  # a final clean training error above this: the seed did not leave the initial plateau
JOBS = 2  # cells at once, one thread each
SCHEDULES = {  # name: the overrides of params.yaml's train section
    "batch 128, lr 0.05, 200 iterations, lr / 10 at 100 and 150": [
        "train.batch_size=128",
        "train.lr=0.05",
        "train.max_steps=200",
        "train.milestones=[100,150]",
    ],
    "batch 64, lr 0.05, 150 iterations, lr / 10 at 100 and 125": ["train.lr=0.05"],
    "batch 64, lr 0.05, 150 iterations, lr / 10 at 100 and 125, 20 iterations of warm-up": [
        "train.lr=0.05",
        "train.warmup_steps=20",
    ],
    "batch 64, lr 0.1, 150 iterations, lr / 10 at 100 and 125": ["train.lr=0.1"],
    "batch 64, lr 0.02, 150 iterations, lr / 10 at 100 and 125": ["train.lr=0.02"],
}
SHARED = ["train.batch_size=64", "train.max_steps=150", "train.milestones=[100,125]", "train.warmup_steps=0"]


def bench(args: list, log: Path) -> None:
    """seeds.py's `bench` under this machine's own arithmetic."""
    seeds_study.bench(args, {**os.environ, "PYTHONPATH": str(ROOT)}, log)


def train(folder: Path, seeds: list[int], overrides: list[str], data: Path) -> list[dict]:
    """Every seed's cell under `overrides`, JOBS at a time: each seed's errors and whether it stalled."""
    folder.mkdir(parents=True)

    def one(seed: int) -> dict:
        out = folder / f"{VARIANT}-{DEPTH}-{seed}"
        args = ["train", "--params", PARAMS, "--variant", VARIANT, "--depth", DEPTH, "--seed", seed, "--out", out]
        bench([*args, "--data", data, "--no-progress", "wandb.mode=disabled", *overrides], folder / f"{seed}.log")
        m = json.loads((out / "metrics.json").read_text())
        clean = m[record.CLEAN_TRAIN_ERROR]
        stalled = m["diverged"] or clean is None or clean > STALLED
        return {"seed": seed, "test_error": m[record.TEST_ERROR], "clean_train_error": clean, "stalled": stalled}

    with ThreadPoolExecutor(JOBS) as pool:
        return list(pool.map(one, seeds))


def measure() -> dict:
    seeds = list(config.load(PARAMS).grid.seeds)  # a broken params.yaml fails here, before any work
    start, env_now = time.perf_counter(), environment()
    found = {}
    with tempfile.TemporaryDirectory(prefix="schedule-") as scratch:
        scratch = Path(scratch)
        bench(["prepare", "--params", PARAMS, "--out", scratch / "prepared"], scratch / "prepare.log")
        for i, (name, overrides) in enumerate(SCHEDULES.items()):
            print(f"{name}: seeds {seeds}", flush=True)
            found[name] = {"overrides": [*SHARED, *overrides]}
            found[name]["seeds"] = train(scratch / str(i), seeds, found[name]["overrides"], scratch / "prepared")
    return {
        "cell": f"{VARIANT}-{DEPTH}",
        "stalled_above": STALLED,
        "commit": env_now["git"]["commit"],
        "dirty": env_now["git"]["dirty"],
        "hardware": env_now["hardware"],
        "versions": env_now["versions"],
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "schedules": found,
    }


def table() -> str:
    study = json.loads(OUT.read_text())
    h = study["hardware"]
    lines = [
        f"{study['cell']} at each seed under each schedule (`benchmarks/schedule.py`, "
        f"{h['cpu_count']}-core {h['cpu']}, {h['cpu_capability']} kernels, torch {study['versions']['torch']}, "
        f"commit {study['commit'][:7]}, "
        f"{study['minutes']} min). A seed stalls when its final clean training error is above "
        f"{100 * study['stalled_above']:g} %.",
        "",
        "| schedule | seeds stalled | test error (%), each seed | clean training error (%), each seed |",
        "|---|---|---|---|",
    ]
    pct = lambda v: "diverged" if v is None else f"{100 * v:.1f}"
    for name, s in study["schedules"].items():
        stalled = sum(x["stalled"] for x in s["seeds"])
        tests = ", ".join(pct(x["test_error"]) for x in s["seeds"])
        cleans = ", ".join(pct(x["clean_train_error"]) for x in s["seeds"])
        lines.append(f"| {name} | {stalled} of {len(s['seeds'])} | {tests} | {cleans} |")
    return "\n".join(lines)


def main() -> None:
    if not {"--table", "--write", "--check"} & set(sys.argv[1:]):
        argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
        study = measure()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(study, indent=2) + "\n")
        print(table())
        return
    if "--table" in sys.argv[1:]:
        sys.argv.remove("--table")
    blocks.main(__doc__.split("\n\n")[0], table, [DOCUMENT], (BEGIN, END), "perf/schedule/")


if __name__ == "__main__":
    main()
