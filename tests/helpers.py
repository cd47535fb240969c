"""What the tests share besides fixtures: the project's paths, one way to run a command in a subprocess, a
folder's snapshot, and hand-made cells."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
BIN = Path(sys.executable).parent  # the venv's bin: dvc, wandb, and bench for the stages
# the offline digits data as the tests prepare it, whatever params.yaml's defaults say
DIGITS = ["data.name=digits", "data.source=null", "data.md5=null", "data.val_size=144"]
PROBE = ["diagnostics.probe_size=64", "diagnostics.pairs=2", "diagnostics.points=4"]  # small diagnostics, all measured
QUICK = ["--no-progress", "wandb.mode=disabled", "trainer.accelerator=cpu", *DIGITS, *PROBE]  # bench train on the CPU


def run(cmd, cwd=ROOT, check=True, timeout=600):
    """A shell command (str) or argv (list), with the venv's bin first on PATH; its CompletedProcess."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str), timeout=timeout
    )
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def bench_argv(*args) -> list[str]:
    """The command line of `bench ARGS` in a subprocess: this Python, `-m bench`."""
    return [sys.executable, "-m", "bench", *map(str, args)]


def bench(*args, check=False, **kw):
    """`bench ARGS` in a subprocess, for what needs a process of its own: DDP, kill -9, the README's example."""
    return run(bench_argv(*args), check=check, **kw)


def set_params(repo, **sections):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        p[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, by path relative to it (lock files excepted: they say who ran
    last), to compare before and after a command that must change nothing."""
    from bench.files import LOCK

    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


@functools.cache
def hand_key(cell, overrides: tuple = ()) -> str:
    """The run key `bench train` writes for `cell` under params.yaml's params and `overrides` (the grid's aside,
    which no key reads) and the hand-made cells' data checksum: the report takes such a cell for one they trained."""
    from bench import config
    from bench.run_key import run_key

    return run_key(config.load(PARAMS, list(overrides)), cell, "0" * 32)


def metrics(
    variant, depth, seed, test, train=0.01, diverged=False, dataset="cifar10", step=300, scalars=None, **fields
):
    """A hand-made cell's record, a bench.record.Metrics as `bench train` writes it: CIFAR-10's sizes, the given
    test and training errors; a diverged one (at `step`) has no errors and no "end/..." scalars. `fields` replace
    any other field (wall_time_s=30.0, ...)."""
    from dataclasses import replace

    from bench.record import Cell, Metrics

    ok = not diverged
    m = Metrics(
        variant=variant,
        depth=depth,
        seed=seed,
        dataset=dataset,
        data_md5="0" * 32,
        num_classes=10,
        train_images=50_000,
        test_images=10_000,
        params=270_000,
        train_loss=1.0 if ok else None,
        train_error=train if ok else None,
        val_loss=1.0 if ok else None,
        val_error=test if ok else None,
        test_loss=1.0 if ok else None,
        test_error=test if ok else None,
        clean_train_error=train if ok else None,
        steps=400,
        epochs=4,
        wall_time_s=1.0,
        images_per_s=1000.0,
        diverged=diverged,
        diverged_step=step if diverged else None,
        run_key=hand_key(Cell(variant, depth, seed)),
        weights_sha256=None,
        scalars=scalars or {"init/shattering": 0.5, **({} if diverged else {"end/shattering": 0.4})},
    )
    return replace(m, **fields)


def diagnostics(m) -> dict:
    """A hand-made diagnostics.json: the probe, per-block lists at init and, unless the cell diverged, at the end."""
    blocks = [1.0, 0.5, 0.25]
    moment = {"activation_grad_rms": blocks, "relative_weight_grad": blocks, "response_std": blocks * 2}
    moment |= {"spp_squared_mean": blocks, "spp_variance": [1.0, 2.0, 3.0], "spp_branch_variance": [1.0] * 3}
    moment |= {"branch_ratio_per_block": [None] * 3 if m.variant.startswith("plain") else [0.5, 0.4, 0.3]}
    end = {"lesion_error": [0.5, 0.9, 0.4], "lesion_downsampling": [False, True, False], "lesion_at_chance": False}
    probe = {"seed": 0, "size": 256, "indices": list(range(256)), "class_counts": [25] * 4 + [26] * 6}
    return {"probe": probe, "init": moment} | ({} if m.diverged else {"end": moment | end | {"intact_error": 0.1}})


def write_predictions(folder: Path, m) -> None:
    """A hand-made predictions.safetensors with exactly the record's errors: labels cycle through the classes, and
    a draw seeded by the cell's name picks the images it gets wrong (empty for a diverged cell)."""
    import zlib

    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(zlib.crc32(m.cell.name.encode()))
    arrays = {}
    for split, n, error in (("test", m.test_images, m.test_error), ("train", m.train_images, m.clean_train_error)):
        n = 0 if error is None else n
        label = (np.arange(n) % m.num_classes).astype(np.int16)
        predicted = label.copy()
        wrong = rng.choice(n, round(error * n), replace=False) if n else []
        predicted[wrong] = (label[wrong] + 1) % m.num_classes
        arrays |= {f"{split}/predicted": predicted, f"{split}/label": label}
    save_file(arrays, str(folder / "predictions.safetensors"))


def write_cell(runs: Path, m, steps=(100, 200, 300, 400)) -> Path:
    """A hand-made finished cell's folder in `runs`, for the record `m`: metrics.json, diagnostics.json, env.json,
    predictions.safetensors and history.csv, which falls from chance towards the final errors (NaN from the step a
    diverged cell diverged at)."""
    import csv
    import json

    folder = runs / m.cell.name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m.to_json(), indent=2) + "\n")
    (folder / "diagnostics.json").write_text(json.dumps(diagnostics(m)))
    env = {"versions": {"python": "3.11"}, "hardware": {"cpu": "test"}, "git": {"commit": "0" * 40, "dirty": False}}
    (folder / "env.json").write_text(
        json.dumps(env | {"data_md5": m.data_md5, "precision": "32-true", "world_size": 1})
    )
    write_predictions(folder, m)
    with open(folder / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "lr", "train/loss", "train/error", "test/loss", "test/error"])
        for i, s in enumerate(steps):
            end = (i + 1) / len(steps)
            train = 0.9 + end * ((m.train_error or 0.9) - 0.9)
            test = 0.9 + end * ((m.test_error or 0.9) - 0.9)
            row = [1, train, 1, test] if not (m.diverged and s >= m.diverged_step) else ["nan"] * 4
            w.writerow([i, s, 0.1, *row])
    return folder


# plain: 20 trains, 56 is at chance with one seed diverged, 110 diverges; residual_bn near He et al.
GRID = {
    ("plain", 20): [0.090, 0.094, 0.092],
    ("plain", 56): [0.899, 0.900, None],
    ("plain", 110): [None] * 3,
    ("residual_bn", 20): [0.084, 0.086, 0.088],
    ("residual_bn", 56): [0.069, 0.071, 0.070],
    ("residual_bn", 110): [0.0695, 0.0700, 0.0705],
}
GRID_PARAMS = ["grid.variants=[plain, residual_bn]", "grid.depths=[20, 56, 110]", "grid.seeds=[0, 1, 2]"]


def write_grid(runs, dataset="cifar10", overrides=()):
    """The hand-made grid of the report tests: GRID's test errors, in `runs`, as trained under `overrides`."""
    from bench.record import Cell

    for (v, d), tests in GRID.items():
        for s, t in enumerate(tests):
            train = 0.899 if v == "plain" and d == 56 else 0.01
            key = hand_key(Cell(v, d, s), tuple(overrides))
            write_cell(runs, metrics(v, d, s, t, train, diverged=t is None, dataset=dataset, run_key=key))
