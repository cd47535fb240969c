"""The diagnostics at initialisation of every variant at one depth, on a prepared dataset: the README's
diagnostics table. The probe, the BN calibration and the measures are exactly a cell's (bench.train.stage,
bench.diagnostics.probe); no training.

    python benchmarks/diagnostics.py --data data/prepared [--depth 56] [--seeds 0 1] [--out FILE.json]
    python benchmarks/diagnostics.py --prepare PATH/cifar10-jpeg.tar.gz ...   # bench prepare it first

Prints one row per variant, mean ± std over the seeds, and writes every seed's record as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import config
from bench.record import Cell
from bench.train.data import load_prepared
from bench.train.stage import build, diagnostics_callback

KEYS = (
    "grad_ratio",
    "shattering",
    "shattering_lag1",
    "variance_growth",
    "spp_growth",
    "branch_ratio",
    "bn_fold_difference",
)


def measure_at_init(params: config.Params, data, variant: str, depth: int, seed: int) -> dict:
    """A cell's init diagnostics, as bench.train.stage records them: its network, its probe, BN calibrated on it."""
    module, _ = build(params, Cell(variant, depth, seed), data)
    return diagnostics_callback(params, data).probe_diagnostics(module.model, "cpu", init=True)


def summary(values: list) -> str:
    finite = [v for v in values if v is not None]
    if not finite:
        return "NaN (saturated)"
    text = f"{statistics.fmean(finite):.3g}" + (f" ± {statistics.stdev(finite):.2g}" if len(finite) > 1 else "")
    return text + (f" ({len(values) - len(finite)} saturated)" if len(finite) < len(values) else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a prepared folder (bench prepare's output)")
    ap.add_argument("--prepare", help="an ImageFolder archive to prepare first (e.g. the CIFAR-10 JPEG tar.gz)")
    ap.add_argument("--depth", type=int, default=56)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write every record here as JSON")
    a = ap.parse_args(argv)
    overrides, data_dir = [], a.data
    if a.prepare:
        data_dir = tempfile.mkdtemp(prefix="bench-diagnostics-")
        overrides = [
            "data.name=imagefolder",
            f"data.source={Path(a.prepare).resolve()}",
            "data.md5=null",
            "data.val_size=0",
        ]
        subprocess.run([sys.executable, "-m", "bench", "prepare", "--out", data_dir, *overrides], check=True)
    params = config.load(Path("params.yaml"), [*overrides, f"speed.threads={a.threads}"])  # build sets them
    data = load_prepared(data_dir, params.data)
    records = {}
    print(
        f"{data.name}, depth {a.depth}, seeds {a.seeds}, probe {params.diagnostics.probe_size} test images, "
        f"at initialisation, {torch.__version__}, {a.threads} threads",
        flush=True,
    )
    print("| variant | " + " | ".join(KEYS) + " |\n|" + "---|" * (len(KEYS) + 1), flush=True)
    for v in params.grid.variants:
        start = time.perf_counter()
        records[v] = [measure_at_init(params, data, v, a.depth, s) for s in a.seeds]
        row = [summary([r[k] for r in records[v]]) for k in KEYS]
        print(f"| {v} | " + " | ".join(row) + f" |   ({time.perf_counter() - start:.0f} s)", flush=True)
    if a.out:
        Path(a.out).write_text(
            json.dumps(
                {
                    "dataset": data.name,
                    "depth": a.depth,
                    "seeds": a.seeds,
                    "torch": torch.__version__,
                    "records": records,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
