"""The CPU figures of the README's performance table: training speed, `bench prepare`, `dvc repro`.

    python benchmarks/cpu.py [--cifar PATH/cifar10-jpeg.tar.gz] [--out perf/cpu] [--skip-repro]

Each measurement runs in its own process; wall time and that process's peak memory (wait4's
ru_maxrss) are printed as they come and written to OUT/summary.json with the `bench perf` JSONs.
Figures, not pass/fail: the targets are in the README's "Speed".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def measure(cmd: list[str], cwd: Path = ROOT) -> dict:
    """Run `cmd`; its wall time, peak resident memory and stdout. Raises if it fails."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "stdout": stdout,
    }


def perf(name: str, args: list[str], out: Path) -> dict:
    r = measure(["bench", "perf", "--device", "cpu", "--out", str(out / f"{name}.json"), *args])
    p = json.loads(r["stdout"])
    line = {
        k: p[k]
        for k in (
            "variant",
            "depth",
            "batch",
            "data",
            "hardware",
            "lightning_overhead_pct",
            "lightning_overhead_pct_range",
            "lightning_overhead_ms",
            "max_loss_difference",
        )
    }
    line.update(bench_images_per_s=p["bench"]["images_per_s"], bare_images_per_s=p["bare"]["images_per_s"])
    print(f"perf {name}: {json.dumps(line)}", flush=True)
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", help="CIFAR-10 as an archive bench prepare reads (the JPEG ImageFolder tar.gz)")
    ap.add_argument("--out", default="perf/cpu")
    ap.add_argument("--skip-repro", action="store_true", help="skip the from-scratch `dvc repro` (about 4 min)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"perf": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        digits = tmp / "digits"
        measure(["bench", "prepare", "--out", str(digits)])
        cpu = ["trainer.accelerator=cpu", "wandb.mode=disabled"]
        # CIFAR-10's shape (synthetic 32x32 RGB images): He et al.'s step, about 0.4 s on 2 cores
        summary["perf"]["cifar_shape_20"] = perf(
            "cifar_shape_20",
            ["--variant", "residual_bn", "--depth", "20", "--steps", "20", "--warmup", "3", "--repeats", "5", *cpu],
            out,
        )
        # the default ablation's 8x8 digits: steps of 10-60 ms, where a framework's per-step cost shows
        for depth in (8, 20, 56):
            summary["perf"][f"digits_{depth}"] = perf(
                f"digits_{depth}",
                [
                    "--variant",
                    "residual_bn",
                    "--depth",
                    str(depth),
                    "--data",
                    str(digits),
                    "--steps",
                    "100",
                    "--warmup",
                    "10",
                    "--repeats",
                    "9",
                    *cpu,
                ],
                out,
            )
        if a.cifar:
            r = measure(
                [
                    "bench",
                    "prepare",
                    "--out",
                    str(tmp / "cifar"),
                    "data.name=imagefolder",
                    f"data.source={Path(a.cifar).resolve()}",
                    "data.md5=null",
                    "data.val_size=5000",
                ]
            )
            summary["prepare_cifar10"] = {k: r[k] for k in ("wall_s", "peak_rss_gb")}
            print(f"bench prepare CIFAR-10 ({a.cifar}): {summary['prepare_cifar10']}", flush=True)
        if not a.skip_repro:
            clone = tmp / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            r = measure(["dvc", "repro"], cwd=clone)
            summary["dvc_repro_from_scratch"] = {k: r[k] for k in ("wall_s", "peak_rss_gb")}
            print(f"dvc repro from scratch (a clone of HEAD): {summary['dvc_repro_from_scratch']}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}/summary.json")


if __name__ == "__main__":
    main()
