"""The GPU rows of the speed table, computed from the JSON files under perf/gpu/ (benchmarks/speed.py's), and
written into README.md and docs/speed.md between their `<!-- gpu figures -->` markers:

    python benchmarks/gpu_table.py            # print the table
    python benchmarks/gpu_table.py --write    # rewrite the two documents' blocks
    python benchmarks/gpu_table.py --check    # exit 1 if a block differs from the JSON files
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import blocks

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "perf/gpu"
DOCUMENTS = (ROOT / "README.md", ROOT / "docs/speed.md")
BEGIN, END = "<!-- gpu figures -->", "<!-- end of gpu figures -->"
GOAL_IMAGES_PER_S, GOAL_OVERHEAD_PCT = 15_000, 5  # ResNet-56 residual_bn at batch 128 on one GPU
HE_ITERATIONS, HE_ERROR_PCT = 64_000, 8.75  # He et al. 2016, Table 6: ResNet-20 on CIFAR-10
CHECKS = ("summary.json", "summary-same-grid.json", "summary-depths.json")  # the check's calls, in order
PERF = {  # bench perf's JSON under perf/gpu/ -> how it ran
    "eager-fp32-56": "eager fp32",
    "deterministic-fp32-56": "eager fp32 on deterministic kernels, 30 steps (`same`)",
    "eager-bf16-56": "eager bf16 + channels_last",
    "compiled-bf16-56": "compiled (`reduce-overhead`) bf16 + channels_last",
    "eager-bf16-20": "eager bf16 + channels_last",
    "compiled-bf16-20": "compiled bf16 + channels_last",
    "eager-bf16-110": "eager bf16 + channels_last",
    "compiled-bf16-110": "compiled bf16 + channels_last",
}


def read(name: str) -> dict:
    return json.loads((GPU / name).read_text())


def pairs(n: int, low: float, high: float) -> str:
    return f"{n} pairs: {low:.1f} to {high:.1f} %" if n > 1 else "1 pair"


def perf_row(name: str, how: str) -> str:
    p = read(f"{name}.json")
    low, high = p["lightning_overhead_pct_range"]
    figure = (
        f"real path {p['bench']['images_per_s']:,.0f} images/s, bare loop {p['bare']['images_per_s']:,.0f}: overhead "
        f"{p['lightning_overhead_pct']:.1f} % ({pairs(p['repeats'], low, high)}); losses apart by at "
        f"most {p['max_loss_difference']:.3g}"
    )
    goal = ""
    if name == "compiled-bf16-56":
        met = p["bench"]["images_per_s"] >= GOAL_IMAGES_PER_S and p["lightning_overhead_pct"] <= GOAL_OVERHEAD_PCT
        goal = f">= {GOAL_IMAGES_PER_S:,} images/s, <= {GOAL_OVERHEAD_PCT} %: {'met' if met else 'missed'}"
    return f"| `bench perf`, residual_bn-{p['depth']}, batch {p['batch']}, {how} | {figure} | {goal} |"


def he_rows() -> list[str]:
    """The finished run (metrics.json), and the longer one stopped in its final evaluation (its history.csv)."""
    rows = []
    m = read("he2016-resnet20/metrics.json")
    share = 100 * m["steps"] / HE_ITERATIONS
    rows.append(
        f"| ResNet-20 residual_bn, He et al.'s protocol cut to {m['steps']:,} of {HE_ITERATIONS:,} iterations "
        f"({share:.0f} %), the lr steps at the same fractions | test error {100 * m['test/error']:.2f} % (He et al. "
        f"{HE_ERROR_PCT} % after {HE_ITERATIONS:,}); {m['images_per_s']:,.0f} images/s in the timed steps, "
        f"{m['wall_time_s']:.0f} s of training with the test set scored each epoch | |"
    )
    cut = GPU / "he2016-resnet20-14900/history.csv"
    if cut.exists():
        history = list(csv.DictReader(cut.read_text().splitlines()))
        tested = [r for r in history if r["test/error"]]
        last, steps = tested[-1], int(history[-1]["step"])
        rows.append(
            f"| the same cut to {steps:,} iterations ({100 * steps / HE_ITERATIONS:.0f} %), stopped by the check's "
            f"time limit in its final evaluation | test error {100 * float(last['test/error']):.2f} % at step "
            f"{int(last['step']):,}, the last epoch's end (history.csv) | |"
        )
    return rows


def grid_rows() -> list[str]:
    """`bench grid` of 1, 2 and 4 ResNet-20 cells at once: each cell's metrics.json, kept by the check."""
    rows = []
    for key, g in read("summary-same-grid.json")["grid"].items():  # x1, x2, x4: that many cells at once
        k = int(key[1:])
        cells = [json.loads(f.read_text()) for f in sorted((GPU / f"grid-x{k}").glob("*.json"))]
        what = f"| `bench grid --jobs {k}`: {k} ResNet-20 residual_bn cell{'s' * (k > 1)} at once"
        what += f", {cells[0]['steps']:,} iterations each" if cells else ""
        if len(cells) < k:
            rows.append(
                f"{what} | not measured: cut off by the check's time limit at {g['wall_s']:.0f} s, "
                f"{len(cells)} of {k} cells done | |"
            )
            continue
        own = sum(c["images_per_s"] for c in cells)
        each = ", ".join(f"{c['images_per_s']:,.0f}" for c in cells)
        training = ", ".join(f"{c['wall_time_s']:.0f}" for c in cells)
        rows.append(
            f"{what} | {own:,.0f} images/s of training in all ({each} per cell); {training} s of training, "
            f"{g['wall_s']:.0f} s of wall for the whole grid, start-up, compilation and the diagnostics included | |"
        )
    return rows


def table() -> str:
    checks = [read(name)["versions"] for name in CHECKS]
    v = checks[0]
    same = [{k: c[k] for k in v} for c in checks]
    if any(c != v for c in same):
        raise SystemExit(f"gpu_table.py: the checks in {', '.join(CHECKS)} ran on different cards or versions")
    card, driver = v["gpu"].split(", ")[:2]
    cudnn = v["cudnn"]
    env = read("he2016-resnet20/env.json")
    later = sorted({c["commit"][:7] for c in checks[1:]})
    head = (
        f"Measured on one {card} (driver {driver}, {env['hardware']['cpu_count']} CPU cores) with torch {v['torch']}, "
        f"CUDA {v['cuda']}, cuDNN {cudnn // 10000}.{cudnn // 100 % 100}.{cudnn % 100}, lightning {v['lightning']} and "
        f"Python {v['python']}, by `benchmarks/speed.py --device cuda`: the ResNet-56 rows but the deterministic one, "
        f"and He et al.'s, at commit {env['git']['commit'][:7]}; the others at commit {', '.join(later)}. "
        "The JSON files are in `perf/gpu/`. The CIFAR-10 of the ResNet-20 training rows is decoded from a JPEG copy, "
        "whose pixels differ from the original's."
    )
    rows = [perf_row(name, how) for name, how in PERF.items()] + he_rows() + grid_rows()
    return "\n".join([head, "", "| what | figure | goal |", "|---|---|---|", *rows])


def main() -> None:
    blocks.main(__doc__.split("\n\n")[0], table, DOCUMENTS, (BEGIN, END), "perf/gpu/")


if __name__ == "__main__":
    main()
