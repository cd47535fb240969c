"""The `bench` command line's grammar: every command, option and help text (bench/cli.py runs them).

In no stage's deps, like cli.py: a help text retrains nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata

import shtab

import bench
from bench import record


def _version() -> str:  # a source checkout on PYTHONPATH (a GPU machine's own Python) has no installed version
    try:
        return importlib.metadata.version("bench")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: run from a source checkout)"


def parser() -> argparse.ArgumentParser:
    from bench.scale import slurm  # `bench slurm`'s options; not at the top: those imports are every stage's deps

    p = argparse.ArgumentParser(prog="bench", description=bench.__doc__)
    p.add_argument("--version", action="version", version=f"bench {_version()}")
    sub = p.add_subparsers(dest="command", required=True, help="`bench COMMAND --help` for its options")

    def command(name: str, help: str, example: str | None = None, params: bool = True) -> argparse.ArgumentParser:
        """A subcommand: --params unless told not to; section.key=value overrides if given an example of them."""
        c = sub.add_parser(name, help=help)
        if params:
            c.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
        if example:
            c.add_argument("overrides", nargs="*", metavar="section.key=value", help=f"param overrides, e.g. {example}")
        return c

    t = command("train", "train one cell (variant, depth, seed) of the grid", "train.lr=0.05 trainer.devices=2")
    t.add_argument("--variant", required=True, help=f"one of: {', '.join(record.VARIANTS)}")
    t.add_argument("--depth", required=True, type=int, help="6n+2 with n >= 1: 8, 14, 20, 26, 32, 38, ...")
    t.add_argument("--seed", type=int, default=0, help="the cell's seed (default: 0)")
    t.add_argument("--out", required=True, help="the cell's output folder")
    t.add_argument("--data", default="data/prepared", help="prepared data folder (default: data/prepared)")
    t.add_argument(
        "--no-progress", action="store_true", help="no progress bar (never one under DVC or outside a terminal)"
    )

    pr = command("prepare", "verify a dataset source by checksum and write its prepared form", "data.val_size=5000")
    pr.add_argument("--out", default="data/prepared", help="prepared data folder (default: data/prepared)")
    pr.add_argument("--raw", default="data/raw", help="where official archives are downloaded (default: data/raw)")

    r = command("report", "aggregate the grid's cells into tables, figures and report.md", "grid.seeds=[0,1]")
    r.add_argument("--runs", default="runs", help="folder of the cells' folders (default: runs)")
    r.add_argument("--out", default="report", help="report folder (default: report)")
    r.add_argument("--lr-sweep", default="runs_lr/summary.json", help="bench lr-sweep's summary, if any")
    r.add_argument("--toy", default="report/toy", help="bench toy's folder, if any")
    r.add_argument("--landscape", default="report/landscape", help="bench landscape's folder, if any")
    r.add_argument("--curvature", default="report/curvature", help="bench curvature's folder, if any")
    r.add_argument("--paths", default="report/paths", help="bench paths' folder, if any")

    ls = command("lr-sweep", "every variant at a few learning rates, at one depth (BN and lr)", "lr_sweep.depth=56")
    ls.add_argument("--data", default="data/prepared", help="prepared data folder (default: data/prepared)")
    ls.add_argument("--out", default="runs_lr", help="output folder (default: runs_lr)")

    ty = command("toy", "Balduzzi et al.'s toy shattered-gradients experiment", "toy.seeds=5")
    ty.add_argument("--out", default="report/toy", help="output folder (default: report/toy)")

    la = command("landscape", "Li et al.'s loss surfaces of trained cells, 1-D and 2-D", "landscape.resolution=21")
    la.add_argument("--runs", default="runs", help="folder of the cells' folders (default: runs)")
    la.add_argument("--data", default="data/prepared", help="prepared data folder (default: data/prepared)")
    la.add_argument("--out", default="report/landscape", help="output folder (default: report/landscape)")
    la.add_argument("--directions", default="landscape", help="each cell's two directions (default: landscape)")

    cu = command("curvature", "the Hessian's top eigenvalue and trace, at init and end", "curvature.samples=32")
    pa = command("paths", "the gradient carried by paths of each length (Veit et al.)", "paths.samples=16")
    for stage, name in ((cu, "curvature"), (pa, "paths")):
        stage.add_argument("--runs", default="runs", help="folder of the cells' folders (default: runs)")
        stage.add_argument("--data", default="data/prepared", help="prepared data folder (default: data/prepared)")
        stage.add_argument("--out", default=f"report/{name}", help=f"output folder (default: report/{name})")

    g = command("grid", "train the out-of-date cells concurrently (k per GPU), then dvc commit them", params=False)
    g.add_argument(
        "-j", "--jobs", type=int, default=2, help="cells at once per GPU, or CPU processes (default: 2, as `make run`)"
    )
    g.add_argument("--dry-run", action="store_true", help="list the out-of-date cells it would train; train none")
    g.add_argument(
        "--no-forkserver", action="store_true", help="each cell a process of its own, not forked (seconds slower)"
    )
    g.add_argument("--gpus", default=None, help="comma-separated GPU ids (default: every visible GPU)")
    g.add_argument("--logs", default="logs/grid", help="one log per cell (default: logs/grid)")

    sl = command("slurm", "write sbatch scripts: the out-of-date cells as a job array, a DDP cell", params=False)
    slurm.add_arguments(sl)

    pf = command("perf", "training images/s, bench's real path vs a bare PyTorch loop, JSON", "speed.compile=default")
    pf.add_argument("--variant", required=True, help=f"one of: {', '.join(record.VARIANTS)}")
    pf.add_argument("--depth", required=True, type=int, help="6n+2 with n >= 1: 8, 14, 20, 26, 32, 38, ...")
    pf.add_argument("--batch", type=int, default=None, help="batch size (default: train.batch_size)")
    pf.add_argument("--device", required=True, choices=("cpu", "cuda"), help="where to run: cpu or cuda")
    pf.add_argument("--precision", default=None, help="32-true, bf16-mixed or 16-mixed (default: trainer.precision)")
    pf.add_argument("--steps", type=int, default=100, help="timed steps per run (default: 100)")
    pf.add_argument("--warmup", type=int, default=10, help="untimed steps first: compilation, autotuning (default: 10)")
    pf.add_argument("--repeats", type=int, default=3, help="runs of each path, back to back, medians (default: 3)")
    pf.add_argument("--data", default=None, help="a prepared data folder (default: synthetic CIFAR-10-sized images)")
    pf.add_argument("--out", default=None, help="also write the JSON to this file")
    pf.add_argument("--profile", metavar="DIR", help="one more run under torch.profiler: DIR/fit-profile.txt, a trace")

    ps = command("preset", "print a preset file (presets/he2016.yaml) as overrides, checked")
    ps.add_argument("file", help="a YAML file in params.yaml's layout, holding only the keys it sets")
    ps.add_argument("--dvc", action="store_true", help="as `dvc exp run` flags: -S section.key=value")

    w = command(
        "wandb", "list offline W&B runs with the `wandb sync` line; --report builds the Report", "wandb.dir=/scratch"
    )
    w.add_argument("--report", action="store_true", help="build the W&B Report (saved and linked when online)")

    co = sub.add_parser("completion", help='print a shell completion script: eval "$(bench completion bash)"')
    shtab.add_argument_to(co, "shell", help="the shell (default: bash)", parent=p)
    return p
