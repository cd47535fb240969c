"""How many seeds do the claims that flipped need? Retrain the cells two claims read at more seeds, under this
machine's own arithmetic and a perturbed one, and compute both claims from grid.seeds' number of seeds and from all.

    python benchmarks/seeds.py                 # plain_bn-56 and residual_bn-56, seeds 0-6, two arithmetics
    python benchmarks/seeds.py --seeds 9       # seeds 0-8

The claims are `landscape/skips` (Li et al.: plain_bn-56's loss surface less convex than residual_bn-56's) and
`branches/near_zero` (residual_bn-56's branches shrink against the stream in training), each of which flipped
in one check of perf/arithmetic/. The cells are trained by `bench train` and drawn by `bench landscape` with
params.yaml's own settings, in a scratch folder; the claims are the report's own functions over them. The
perturbed arithmetic is `ATEN_CPU_CAPABILITY=default` (torch's non-vectorised kernels), as arithmetic.py's
default. Writes perf/seeds/depth-56.json and prints each claim's sentence. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
sys.path.insert(0, str(ROOT))

from bench import config, record  # noqa: E402
from bench.provenance import environment  # noqa: E402
from bench.report import landscape as report_landscape  # noqa: E402
from bench.report import propagation  # noqa: E402
from bench.report.verdict import Grid  # noqa: E402

DEPTH = 56
VARIANTS = ("plain_bn", "residual_bn")  # the cells both claims read
CLAIMS = ("landscape/skips", "branches/near_zero")
ARITHMETICS = {"native": {}, "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"}}
JOBS = 2  # cells at once, one thread each


def bench(args: list, env: dict, log: Path) -> None:
    """One bench command with params.yaml's settings, in the log's folder; a failure names its log."""
    cmd = [sys.executable, "-m", "bench", *map(str, args)]
    with log.open("w") as out:
        if subprocess.run(cmd, env=env, stdout=out, stderr=out, cwd=log.parent).returncode:
            raise SystemExit(f"{Path(sys.argv[0]).name}: `bench {args[0]}` failed: see {log}")


def train(folder: Path, seeds: int, extra_env: dict) -> None:
    """Every cell, JOBS at a time, then their landscapes, all under `extra_env`."""
    env = {**os.environ, **extra_env, "PYTHONPATH": str(ROOT)}
    cells = [(v, s) for s in range(seeds) for v in VARIANTS]
    runs = folder / "runs"
    runs.mkdir(parents=True)

    def one(cell):
        v, s = cell
        args = ["train", "--params", PARAMS, "--variant", v, "--depth", DEPTH, "--seed", s]
        args += ["--out", runs / f"{v}-{DEPTH}-{s}", "--data", folder.parent / "prepared", "--no-progress"]
        bench([*args, "wandb.mode=disabled"], env, folder / f"{v}-{DEPTH}-{s}.log")
        print(f"  {folder.name}: {v}-{DEPTH}-{s}", flush=True)

    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(one, cells))
    grid = [f"grid.variants=[{','.join(VARIANTS)}]", f"grid.depths=[{DEPTH}]", f"grid.seeds={list(range(seeds))}"]
    grid += [f"landscape.seeds={list(range(seeds))}"]
    args = ["landscape", "--params", PARAMS, "--runs", runs, "--data", folder.parent / "prepared"]
    args += ["--out", folder / "landscape"]
    bench([*args, "--directions", folder / "directions", *grid], env, folder / "landscape.log")


def claims(folder: Path, n: int) -> dict:
    """Both claims from the first n seeds of the cells in `folder`: {id: the report's claim}."""
    results = [record.load(folder / "runs", record.Cell(v, DEPTH, s)) for v in VARIANTS for s in range(n)]
    summary = json.loads((folder / "landscape" / "landscape.json").read_text())
    summary["cells"] = {k: c for k, c in summary["cells"].items() if c["seed"] < n}
    found = [*propagation.claims(Grid(results), DEPTH), *report_landscape.claims(summary, DEPTH)]
    return {c["id"]: c for c in found if c["id"] in CLAIMS}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=7, help="seeds per cell (default 7; more than grid.seeds)")
    ap.add_argument("--out", type=Path, default=ROOT / "perf/seeds/depth-56.json", help="the JSON written")
    a = ap.parse_args(argv)
    first = len(config.load(PARAMS).grid.seeds)  # a broken params.yaml fails here, before any work
    if a.seeds <= first:
        ap.error(f"--seeds {a.seeds}: the point is more than the grid's {first}")
    start, env_now = time.perf_counter(), environment()  # the commit the cells are trained from
    found, hardware = {}, {}  # by arithmetic
    with tempfile.TemporaryDirectory(prefix="seeds-") as scratch:
        scratch = Path(scratch)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        bench(["prepare", "--params", PARAMS, "--out", scratch / "prepared"], env, scratch / "prep.log")
        for name, extra in ARITHMETICS.items():
            print(f"{name}: {len(VARIANTS) * a.seeds} cells", flush=True)
            folder = scratch / name.replace("=", "-")
            train(folder, a.seeds, extra)
            found[name] = {n: claims(folder, n) for n in (first, a.seeds)}
            hardware[name] = json.loads(next((folder / "runs").glob("*/env.json")).read_text())["hardware"]
    out = {
        "cells": [f"{v}-{DEPTH}" for v in VARIANTS],
        "seeds": a.seeds,
        "commit": env_now["git"]["commit"],
        "dirty": env_now["git"]["dirty"],
        "hardware": hardware,  # as each arithmetic's cells recorded it: the perturbed one's kernels are DEFAULT
        "versions": env_now["versions"],
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "claims": {
            arith: {
                str(n): {i: {"holds": c["holds"], "sentence": c["sentence"]} for i, c in by_n.items()}
                for n, by_n in ns.items()
            }
            for arith, ns in found.items()
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    for arith, ns in out["claims"].items():
        for n, by_id in ns.items():
            for i, c in by_id.items():
                print(f"{arith}, n = {n}: {i}: {c['sentence']}")


if __name__ == "__main__":
    main()
