"""The `bench` command: thin entry points over pure functions. Bad input exits 2 before any work."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from bench import config, models

OVERRIDES_HELP = "param overrides as section.key=value, e.g. train.lr=0.05 trainer.devices=2"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__import__("bench").__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, overrides: bool = True) -> argparse.ArgumentParser:
        """A subcommand reading --params, and taking section.key=value overrides unless told not to."""
        c = sub.add_parser(name, help=help)
        c.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
        if overrides:
            c.add_argument("overrides", nargs="*", metavar="section.key=value", help=OVERRIDES_HELP)
        return c

    t = command("train", "train one cell (variant, depth, seed) of the ablation grid")
    t.add_argument("--variant", required=True, help=f"one of: {', '.join(models.VARIANTS)}")
    t.add_argument("--depth", required=True, type=int, help="6n+2: 8, 14, 20, 32, 44, 56, 110, ...")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="the cell's output folder")
    t.add_argument("--data", default="data/prepared", help="prepared data folder (default: data/prepared)")
    t.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bar")

    pr = command("prepare", "verify a dataset source by checksum and write its prepared form")
    pr.add_argument("--out", default="data/prepared", help="prepared data folder (default: data/prepared)")
    pr.add_argument("--raw", default="data/raw", help="where official archives are downloaded (default: data/raw)")

    r = command("report", "aggregate the grid's cells into tables, figures and report.md")
    r.add_argument("--runs", default="runs", help="folder of the cells' folders (default: runs)")
    r.add_argument("--out", default="report", help="report folder (default: report)")
    r.add_argument("--lr-sweep", default="runs_lr/summary.json", help="bench lr-sweep's summary, if any")
    r.add_argument("--toy", default="report/toy", help="bench toy's folder, if any")

    ls = command("lr-sweep", "every variant at a few learning rates, at one depth (BN and lr)")
    ls.add_argument("--data", default="data/prepared", help="prepared data folder (default: data/prepared)")
    ls.add_argument("--out", default="runs_lr", help="output folder (default: runs_lr)")

    ty = command("toy", "Balduzzi et al.'s toy shattered-gradients experiment")
    ty.add_argument("--out", default="report/toy", help="output folder (default: report/toy)")

    g = command("grid", "train the out-of-date cells concurrently (k per GPU), then dvc commit them", overrides=False)
    g.add_argument("--workers-per-gpu", type=int, default=1, help="concurrent cells per GPU, or CPU processes")
    g.add_argument("--gpus", default=None, help="comma-separated GPU ids (default: every visible GPU)")
    g.add_argument("--logs", default="logs/grid", help="one log per cell (default: logs/grid)")

    sl = command("slurm", "write sbatch scripts: the grid as a job array, a DDP cell, submit.sh", overrides=False)
    sl.add_argument("--out", default="slurm", help="folder for the scripts (default: slurm)")
    sl.add_argument("--root", default=None, help="the checkout's path on the cluster (default: this one)")
    sl.add_argument("--time", default="24:00:00", help="time limit per job (default: 24:00:00)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--account", default=None)
    sl.add_argument("--cpus-per-gpu", type=int, default=8)
    sl.add_argument("--max-parallel", type=int, default=32, help="array tasks running at once (default: 32)")

    pf = command("perf", "training images/s through bench's real path and a bare PyTorch loop, as JSON")
    pf.add_argument("--variant", required=True, help=f"one of: {', '.join(models.VARIANTS)}")
    pf.add_argument("--depth", required=True, type=int, help="6n+2: 8, 14, 20, 32, 44, 56, 110, ...")
    pf.add_argument("--batch", type=int, default=None, help="batch size (default: train.batch_size)")
    pf.add_argument("--device", required=True, choices=("cpu", "cuda"))
    pf.add_argument("--precision", default=None, help="32-true, bf16-mixed or 16-mixed (default: trainer.precision)")
    pf.add_argument("--steps", type=int, default=100, help="timed steps per run (default: 100)")
    pf.add_argument("--warmup", type=int, default=10, help="untimed steps first: compilation, autotuning (default: 10)")
    pf.add_argument("--repeats", type=int, default=3, help="runs of each path, back to back; medians reported (default: 3)")
    pf.add_argument("--data", default=None, help="a prepared data folder (default: synthetic CIFAR-10-sized images)")
    pf.add_argument("--out", default=None, help="also write the JSON to this file")

    w = command("wandb", "list offline W&B runs with the `wandb sync` line; --report builds the Report")
    w.add_argument("--report", action="store_true", help="build the W&B Report (saved and linked when online)")
    return p


def cmd_lr_sweep(args, params) -> int:
    from bench.lr_sweep import sweep

    for variant in params.grid.variants:
        models.check(variant, params.lr_sweep.depth, params.model.shortcut)
    results = sweep(params, args.data, args.out)
    for r in results:
        state = f"diverged at step {r['diverged_step']}" if r["diverged"] else f"training error {r['train/error']:.3f}"
        print(f"  {r['variant']:12s} lr {r['lr']:<6g} {state}")
    return 0


def cmd_toy(args, params) -> int:
    from bench.toy import toy

    toy(params.toy, args.out)
    print(f"toy shattering ({params.toy.seeds} seeds) -> {args.out}/toy_shattering.png")
    return 0


def cmd_grid(args, params) -> int:
    from bench.launcher import launch

    if args.workers_per_gpu < 1:
        raise ValueError("--workers-per-gpu must be at least 1")
    results = launch(params, args.workers_per_gpu, args.gpus.split(",") if args.gpus else None, args.logs)
    return 1 if any(r["returncode"] for r in results) else 0


def cmd_slurm(args, params) -> int:
    from pathlib import Path

    from bench.slurm import write

    root = args.root or str(Path.cwd())
    paths = write(params, args.out, root, time=args.time, partition=args.partition, account=args.account,
                  cpus_per_gpu=args.cpus_per_gpu, max_parallel=args.max_parallel)
    print("wrote " + ", ".join(map(str, paths)) + f"\nsubmit the grid with: bash {args.out}/submit.sh")
    return 0


def cmd_wandb(args, params) -> int:
    from bench import tracking

    if args.report:
        from bench.wandb_report import publish

        print(publish(params))
    else:
        print(tracking.sync_lines(params))
    return 0


def cmd_report(args, params) -> int:
    from bench.report import report

    s = report(params, args.runs, args.out, args.lr_sweep, args.toy)
    print(f"report of {s['cells']} cells ({s['diverged']} diverged) -> {args.out}/report.md")
    return 0


def cmd_prepare(args, params) -> int:
    from pathlib import Path

    from bench.datasets import prepare

    meta = prepare(params.data, args.out, Path(args.raw))
    c = meta["counts"]
    print(f"prepared {meta['name']} (md5 {meta['md5']}): {c['train']} train, {c['val']} val, {c['test']} test images "
          f"of shape {tuple(meta['shape'])} in {len(meta['classes'])} classes -> {args.out}")
    return 0


def cmd_perf(args, params) -> int:
    import json
    from pathlib import Path

    from bench.data import load_prepared
    from bench.files import write_json
    from bench.perf import perf

    overrides = [*args.overrides, *([f"train.batch_size={args.batch}"] if args.batch else []),
                 *([f"trainer.precision={args.precision}"] if args.precision else [])]
    params = config.load(args.params, overrides)
    data = load_prepared(args.data, params.data) if args.data else None
    result = perf(params, args.variant, args.depth, args.device, args.steps, args.warmup, args.repeats, data)
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(Path(args.out), result)
    return 0


def cmd_train(args, params) -> int:
    from pathlib import Path

    from bench.grid import progress_line
    from bench.train import train  # heavy imports only once the input is known to be good

    models.check(args.variant, args.depth, params.model.shortcut)
    out = Path(args.out)
    line = progress_line(params, (args.variant, args.depth, args.seed), out.parent)
    if line and out.name == f"{args.variant}-{args.depth}-{args.seed}":  # only for the grid's own folders
        print(line, flush=True)
    m = train(params, args.variant, args.depth, args.seed, args.out, args.data, progress=not args.no_progress)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return 0
    if m["diverged"]:
        print(f"{args.variant}-{args.depth}-{args.seed}: diverged (non-finite loss) at step {m['diverged_step']}; "
              f"recorded in {args.out}/metrics.json")
    else:
        speed = f", {m['images_per_s']:.0f} images/s" if m["images_per_s"] else ""
        print(f"{args.variant}-{args.depth}-{args.seed}: test error {m['test/error']:.4f} after {m['steps']} steps "
              f"({m['wall_time_s']:.0f} s{speed}); wrote {args.out}/metrics.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Lightning 2.6 on torch 2.13 warns about its own use of a deprecated torch API; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # our epoch-level values come from torchmetrics' compute(), which already reduces across processes
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    # the cell's folder is ours (config, metrics, history and checkpoints together; resume reads it)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning 2.6 advertises a cloud logger on every run; the runs go to W&B
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # overrides may also come between options
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(args, "overrides"):
        parser.error(f"bench {args.command} takes no param overrides ({' '.join(extra)}): it reads params.yaml "
                     f"only, so that dvc.lock records what ran; edit params.yaml or use `dvc exp run -S`")
    args.overrides = [*getattr(args, "overrides", []), *extra]
    try:  # bad input (params, overrides, grid cell, data) raises ValueError before any training step
        params = config.load(args.params, args.overrides)
        commands = {"train": cmd_train, "prepare": cmd_prepare, "report": cmd_report, "wandb": cmd_wandb,
                    "lr-sweep": cmd_lr_sweep, "toy": cmd_toy, "grid": cmd_grid,
                    "slurm": cmd_slurm, "perf": cmd_perf}
        return commands[args.command](args, params)
    except ValueError as e:
        parser.exit(2, f"bench {args.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
