"""BN at inference is a linear map: the eval-mode forward pass of every BN net with its BN layers folded into the
convs before them (bench.diagnostics.batchnorm.fold), against the same net unfolded. Prints images/s of each and
the largest logit difference, and writes them with the hardware and versions to perf/cpu/bn_fold.json.

    python benchmarks/bn_fold.py [--depths 20 56 110] [--batch 256] [--threads 1] [--shape 3 32 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench import provenance
from bench.diagnostics import batchnorm
from bench.models import build_model

VARIANTS = ("plain_bn", "residual_bn")


def images_per_s(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """The median over `repeats` timed forward passes, after two untimed ones."""
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            start = time.perf_counter()
            model(x)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32], help="an image's channels, height, width")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="perf/cpu/bn_fold.json")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    x = torch.randn(a.batch, *a.shape)
    rows = []
    print("| variant | depth | images/s | folded | speed-up | max logit difference |\n|---|---|---|---|---|---|")
    for variant in VARIANTS:
        for depth in a.depths:
            net = batchnorm.calibrate_bn(build_model(variant, depth, "projection", 10, a.shape[0]), x).eval()
            plain, folded = images_per_s(net, x, a.repeats), images_per_s(batchnorm.fold(net), x, a.repeats)
            diff = batchnorm.fold_difference(net, x)
            rows.append(dict(variant=variant, depth=depth, images_per_s=plain, folded=folded, difference=diff))
            print(f"| {variant} | {depth} | {plain:.0f} | {folded:.0f} | {folded / plain:.2f}x | {diff:.1e} |")
    env = provenance.environment()
    record = {"batch": a.batch, "shape": a.shape, "threads": a.threads, "rows": rows, **env}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"{env['hardware']['cpu']}, torch {env['versions']['torch']}, {a.threads} thread(s); wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
