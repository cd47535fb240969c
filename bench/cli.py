"""The `bench` command: thin entry points over pure functions. Bad input exits 2 before any work.

Each command imports its stage's code inside its own function: `bench --help` and bad input are answered
before torch and Lightning load, and a DVC stage's deps follow its command's imports (tests/test_structure.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import config, quiet, tracking, validate
from bench.config import Params
from bench.files import write_json
from bench.record import DIVERGED, DIVERGED_STEP, IMAGES_PER_S, TEST_ERROR, TRAIN_ERROR, WALL_TIME, Cell, cells


def cmd_lr_sweep(args, params) -> int:
    from bench.lr_sweep import sweep  # lazy: see the module's docstring

    for r in sweep(params, args.data, args.out):
        state = f"diverged at step {r[DIVERGED_STEP]}" if r[DIVERGED] else f"training error {r[TRAIN_ERROR]:.3f}"
        print(f"  {r['variant']:12s} lr {r['lr']:<6g} {state}")
    return 0


def cmd_toy(args, params) -> int:
    from bench.toy import toy  # lazy: see the module's docstring

    toy(params.toy, args.out)
    print(f"toy shattering ({params.toy.seeds} seeds) -> {args.out}/toy_shattering.png")
    return 0


def cmd_landscape(args, params) -> int:
    from bench.landscape.stage import landscape  # lazy: see the module's docstring

    s = landscape(params, args.runs, args.data, args.out, args.directions)
    skipped = f" (not drawn: {'; '.join(s['not_drawn'])})" if s["not_drawn"] else ""
    print(f"loss landscapes of {len(s['cells'])} cells -> {args.out}/landscape.png{skipped}")
    return 0


def cmd_curvature(args, params) -> int:
    from bench.curvature.stage import curvature  # lazy: see the module's docstring

    s = curvature(params, args.runs, args.data, args.out)
    skipped = f" (not measured: {'; '.join(s['not_measured'])})" if s["not_measured"] else ""
    print(f"Hessian of {len(s['cells'])} cells at initialisation and at the end -> {args.out}/curvature.png{skipped}")
    return 0


def cmd_paths(args, params) -> int:
    from bench.paths.stage import paths  # lazy: see the module's docstring

    s = paths(params, args.runs, args.data, args.out)
    skipped = f" (not measured: {'; '.join(s['not_measured'])})" if s["not_measured"] else ""
    print(f"path-length gradients of {len(s['cells'])} cells -> {args.out}/paths.png{skipped}")
    return 0


def cmd_grid(args, params) -> int:
    from bench.scale.launcher import dvc, launch, stale_cells  # lazy: see the module's docstring

    if args.jobs < 1:
        raise ValueError("--jobs must be at least 1")
    if args.dry_run:  # launch's own decision, without its `dvc repro prepare` and the training
        todo = stale_cells(params)
        print(f"{len(todo)} of {len(cells(params))} cells out of date: {' '.join(c.name for c in todo) or 'none'}")
        if json.loads(dvc("status", "prepare", "--json").stdout or "{}"):  # launch runs it first
            print("and prepare is out of date: if it changes data/prepared, every cell will be out of date")
        return 0
    gpus = args.gpus.split(",") if args.gpus else None  # and main, below: each cell forked, its imports done
    results = launch(params, args.jobs, gpus, args.logs, main=None if args.no_forkserver else main)
    return 1 if any(r["returncode"] for r in results) else 0


def cmd_slurm(args, params) -> int:
    from bench.scale.slurm import run  # lazy: see the module's docstring

    return run(args, params)


def cmd_wandb(args, params) -> int:
    if args.report:
        from bench.report.wandb_report import publish  # lazy: the W&B API, for the Report only

        tracking.check_online(params)
        try:
            print(publish(params))
        except Exception as e:  # the network, the server, the key: wandb raises many types
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ValueError(f"W&B could not save the Report ({type(e).__name__}: {first})") from None
    else:
        print(tracking.sync_lines(params))
    return 0


def cmd_report(args, params) -> int:
    from bench.report.stage import collect, report  # lazy: see the module's docstring
    from bench.report.wandb_report import log_grid  # lazy: see the module's docstring

    studies = {"landscape": args.landscape, "curvature": args.curvature, "paths": args.paths}
    s = report(params, args.runs, args.out, args.lr_sweep, args.toy, studies)
    figures = {name: Path(folder) / f"{name}.png" for name, folder in studies.items()}
    log_grid(params, collect(params, Path(args.runs)), figures)  # the report's files first; W&B is a copy of them
    print(f"report of {s['cells']} cells ({s['diverged']} diverged) -> {args.out}/report.md")
    return 0


def cmd_prepare(args, params) -> int:
    from bench.prepare.stage import prepare  # lazy: see the module's docstring

    meta = prepare(params.data, args.out, Path(args.raw))
    c = meta["counts"]
    print(
        f"prepared {meta['name']} (md5 {meta['md5']}): {c['train']} train, {c['val']} val, {c['test']} test images "
        f"of shape {tuple(meta['shape'])} in {len(meta['classes'])} classes -> {args.out}"
    )
    return 0


def cmd_perf(args, params) -> int:
    from bench.perf import perf, profile, synthetic  # lazy: see the module's docstring
    from bench.train.data import load_prepared  # lazy: see the module's docstring

    data = load_prepared(args.data, params.data) if args.data else synthetic()  # built once, for the profile too
    result = perf(params, args.variant, args.depth, args.device, args.steps, args.warmup, args.repeats, data)
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(Path(args.out), result)
    if args.profile:
        folder = profile(params, args.variant, args.depth, args.device, args.warmup, data, Path(args.profile))
        print(f"bench perf: profile in {folder}", file=sys.stderr)
    return 0


def cmd_preset(args, params) -> int:
    print(" ".join(("-S " if args.dvc else "") + o for o in config.preset(args.file)))
    return 0


def cmd_train(args, params) -> int:
    from bench import provenance  # lazy: in the train stage's deps only
    from bench.progress import duration, progress_line  # lazy: in the train stage's deps only
    from bench.train.distributed import is_rank_zero  # lazy: see the module's docstring
    from bench.train.stage import train  # lazy: see the module's docstring

    cell, out = Cell(args.variant, args.depth, args.seed), Path(args.out)
    if is_rank_zero() and (note := provenance.params_note(Path(args.params))):  # an experiment's leftovers, say
        print(note, flush=True)
    if out.name == cell.name and (line := progress_line(params, cell, out.parent)):  # the grid's own folders
        print(line, flush=True)
    m = train(params, cell, out, args.data, progress=quiet.interactive() and not args.no_progress)
    if not is_rank_zero():
        return 0
    if m[DIVERGED]:
        print(f"{cell.name}: diverged (non-finite loss) at step {m[DIVERGED_STEP]}; recorded in {out}/metrics.json")
    else:
        speed = f", {m[IMAGES_PER_S]:.0f} images/s" if m[IMAGES_PER_S] else ""
        print(
            f"{cell.name}: test error {m[TEST_ERROR]:.4f} after {m['steps']} steps "
            f"({duration(m[WALL_TIME])}{speed}); wrote {out}/metrics.json"
        )
    return 0


# command: (its function, the cells it runs, whether it reads `speed`, whether it reads `wandb`)
COMMANDS = {
    "train": (cmd_train, lambda a, p: [Cell(a.variant, a.depth, a.seed)], True, True),
    "perf": (cmd_perf, lambda a, p: [Cell(a.variant, a.depth, 0)], True, False),
    "lr-sweep": (cmd_lr_sweep, lambda a, p: [Cell(v, p.lr_sweep.depth, 0) for v in p.grid.variants], True, False),
    "grid": (cmd_grid, lambda a, p: cells(p), True, True),
    "slurm": (cmd_slurm, lambda a, p: cells(p), True, True),
    "report": (cmd_report, lambda a, p: cells(p), False, True),
    "wandb": (cmd_wandb, lambda a, p: [], False, True),
    "prepare": (cmd_prepare, lambda a, p: [], False, False),
    "toy": (cmd_toy, lambda a, p: [], False, False),
    "landscape": (cmd_landscape, lambda a, p: section_cells(p, "landscape"), False, False),
    "curvature": (cmd_curvature, lambda a, p: section_cells(p, "curvature"), False, False),
    "paths": (cmd_paths, lambda a, p: section_cells(p, "paths"), False, False),
    "preset": (cmd_preset, lambda a, p: [], False, False),
}


def section_cells(p: Params, section: str) -> list[Cell]:
    """The cells a section of params (landscape, curvature, paths) names, checked like any cell before work."""
    s = getattr(p, section)
    return [Cell(v, d, seed) for v in s.variants for d in p.grid.depths for seed in s.seeds]


def load_params(args) -> Params:
    """params.yaml with the command line's overrides; `bench perf`'s own flags are overrides too."""
    overrides = list(args.overrides)
    if args.command == "preset":  # the preset must apply to params.yaml: its keys exist, its values type-check
        overrides += config.preset(args.file)
    if args.command == "perf":
        overrides += [
            *([f"train.batch_size={args.batch}"] if args.batch else []),
            *([f"trainer.precision={args.precision}"] if args.precision else []),
        ]
    return config.load(getattr(args, "params", "params.yaml"), overrides)  # grid, slurm: dvc.yaml's params.yaml


def main(argv: list[str] | None = None) -> int:
    from bench.arguments import parser as grammar  # lazy: `bench slurm`'s options are the launcher's, no stage's

    quiet.silence()
    parser = grammar()
    if not (argv := sys.argv[1:] if argv is None else argv):  # `bench` alone: what it does, not an error
        parser.print_help()
        return 0
    args, extra = parser.parse_known_args(argv)  # overrides may also come between options
    if not hasattr(args, "params") and any(e.split("=")[0] == "--params" for e in extra):
        parser.exit(
            2,
            f"bench {args.command}: error: it runs dvc.yaml's train stage, which reads params.yaml, not "
            "another --params: edit params.yaml, or run an experiment with `dvc exp run -S key=value`\n",
        )
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(args, "overrides"):
        parser.error(
            f"bench {args.command} takes no param overrides ({' '.join(extra)}): it reads params.yaml "
            f"only, so that dvc.lock records what ran; edit params.yaml or use `dvc exp run -S`"
        )
    args.overrides = [*getattr(args, "overrides", []), *extra]
    try:  # bad input (params, overrides, grid cell, data) raises ValueError before any training step
        params = load_params(args)
        command, command_cells, reads_speed, reads_wandb = COMMANDS[args.command]
        here = args.command in (
            "train",
            "lr-sweep",
            "grid",
        )  # num_nodes: slurm writes multi-node jobs from a login node
        validate.run(params, command_cells(args, params), reads_speed, reads_wandb, check_nodes=here)
        return command(args, params)
    except (ValueError, OSError) as e:  # OSError: a full or read-only disk, an --out that is a file, ...
        parser.exit(2, f"bench {args.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
