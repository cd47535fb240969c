"""`bench report`: aggregate every cell of the grid into tables, figures and a Markdown report.

Final test error per variant x depth as mean +- std over the non-diverged seeds (the final checkpoint, never
the best epoch), each run's 95 % Wilson interval, which differences are within the noise, He et al. 2016
Table 6 and akamaster's reproduction like for like; figures in the layout of He et al. Fig. 6 (training and
test error vs iteration, plain vs residual); error and generalisation gap vs depth.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

from bench import record
from bench.config import Params
from bench.files import recover_dir, replace_dir, temporary, write_json, write_text
from bench.record import (
    AT_CHANCE,
    DIVERGED,
    DIVERGED_STEP,
    GAP,
    NUM_CLASSES,
    TEST_ERROR,
    TEST_IMAGES,
    TRAIN_ERROR,
    TRAIN_IMAGES,
    VARIANTS,
    Cell,
    cells,
    chance_error,
)
from bench.report.figures import plot_convergence, plot_vs_depth
from bench.report.noise import at_chance, noise_section, noise_stats, runs_table
from bench.report.pathologies import section
from bench.report.stats import difference_noise, summarise

# CIFAR-10 test error (%) of ResNets (residual_bn, option A), as printed. He et al. 2016 Table 6: single runs,
# except 110, the best of 5 runs; akamaster/pytorch_resnet_cifar10 reports its best epoch, which is optimistic.
HE2016 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
HE2016_MEAN = {110: (6.61, 0.16, 5)}  # Table 6's "best (mean ± std)": what a mean over seeds is compared with
AKAMASTER = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32, 1202: 6.18}
CIFAR10_TEST_IMAGES = 10_000
SHORTCUT_OPTION = {"zero_pad": ("A", "zero padding, no parameters"), "projection": ("B", "1x1 projections")}


def read(runs: Path, cell: Cell) -> dict:
    """A finished cell's metrics.json, with its generalisation gap; a missing one is an error naming the cell."""
    path = record.path(runs, cell)
    if not path.exists():
        raise ValueError(f"no results for cell {cell.name}: {path} is missing (run `dvc repro`)")
    try:
        m = json.loads(path.read_text())
        m[TEST_ERROR], m[TRAIN_ERROR]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a cell's metrics.json ({type(e).__name__}: {e}); rerun the cell "
            f"(dvc repro train@{cell.name})"
        ) from None
    return {**m, GAP: m[TEST_ERROR] - m[TRAIN_ERROR] if None not in (m[TEST_ERROR], m[TRAIN_ERROR]) else None}


def collect(params: Params, runs: Path) -> list[dict]:
    """Each grid cell's record; a missing cell is an error naming it."""
    return [read(runs, cell) for cell in cells(params)]


def only(values) -> int | None:
    """The one known value of a field the seeds share (their test set's size, the classes); None if unrecorded."""
    known = sorted({v for v in values if v is not None})
    return known[0] if len(known) == 1 else None


def aggregate(results: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (variant, depth): seeds, diverged seeds, seeds at chance, the test set's size, and mean/std of test error,
    training error and gap over the non-diverged seeds."""
    groups = defaultdict(list)
    for m in results:
        groups[m["variant"], m["depth"]].append(m)
    agg = {}
    for key, ms in groups.items():
        ok = [m for m in ms if not m[DIVERGED]]
        agg[key] = {
            "seeds": len(ms),
            "diverged": len(ms) - len(ok),
            "at_chance": sum(map(at_chance, ok)),
            "diverged_steps": [m[DIVERGED_STEP] for m in ms if m[DIVERGED]],
            TEST_IMAGES: only(m.get(TEST_IMAGES) for m in ms),
            NUM_CLASSES: only(m.get(NUM_CLASSES) for m in ms),
            **{k: summarise([m[k] for m in ok]) for k in (TEST_ERROR, TRAIN_ERROR, GAP)},
        }
    return agg


def fmt_cell(a: dict, key: str = TEST_ERROR) -> str:
    """ "mean ± std (n=non-diverged seeds; k/seeds diverged; at chance)", or "diverged (3/3)"."""
    s = a[key]
    if s["n"] == 0:
        return f"diverged ({a['diverged']}/{a['seeds']})" if a["diverged"] else "–"
    notes = [f"n={s['n']}"] + ([f"{a['diverged']}/{a['seeds']} diverged"] if a["diverged"] else [])
    if a["at_chance"]:
        notes.append("at chance / untrained" if a["at_chance"] == s["n"] else f"{a['at_chance']}/{s['n']} at chance")
    std = f" ± {100 * s['std']:.2f}" if s["std"] is not None else ""
    return f"{100 * s['mean']:.2f}{std} ({'; '.join(notes)})"


def he_reference(depth: int) -> str:
    """He et al. 2016 Table 6 at `depth`, saying what the number is: a single run, or a mean of runs."""
    if depth in HE2016_MEAN:
        mean, std, runs = HE2016_MEAN[depth]
        return f"{mean:.2f} ± {std:.2f} (mean of {runs} runs; best {HE2016[depth]:.2f})"
    return f"{HE2016[depth]:.2f} (single run)" if depth in HE2016 else ""


def table(agg: dict, variants: list[str], depths: list[int], key: str = TEST_ERROR, refs: bool = True) -> str:
    head = ["depth", *variants] + (["He et al. 2016", "akamaster (best epoch)"] if refs else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in depths:
        row = [str(d)] + [fmt_cell(agg[v, d], key) if (v, d) in agg else "" for v in variants]
        if refs:
            row += [he_reference(d), f"{AKAMASTER[d]:.2f}" if d in AKAMASTER else ""]
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def like_for_like(agg: dict, depths: list[int]) -> str:
    """Our residual_bn mean over seeds against He et al. at each of their depths: a mean of runs (110) against
    their mean of 5; a single run against our mean, with our seed spread standing in for a single run's spread."""
    rows = [
        "| depth | ours: residual_bn | He et al. 2016 | Δ (ours - He) | noise ± | within noise |",
        "|---|---|---|---|---|---|",
    ]
    for d in [d for d in depths if d in HE2016 and ("residual_bn", d) in agg]:
        ours = noise_stats(agg["residual_bn", d])
        start = f"| {d} | {fmt_cell(agg['residual_bn', d])} | {he_reference(d)}"
        if ours["mean"] is None:  # every seed diverged
            rows.append(f"{start} | | | |")
            continue
        mean, std, runs = HE2016_MEAN.get(d, (HE2016[d], ours["std"] and 100 * ours["std"], 1))
        he = {"mean": mean / 100, "std": std and std / 100, "n": runs, "test_images": CIFAR10_TEST_IMAGES}
        diff, noise = 100 * (ours["mean"] - he["mean"]), 100 * difference_noise(ours, he)
        rows.append(f"{start} | {diff:+.2f} | {noise:.2f} | {'yes' if abs(diff) < noise else 'no'} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else "No residual_bn cell at a depth of He et al.'s Table 6.\n"


def reference_context(params: Params, results: list[dict], datasets: list[str]) -> str:
    """What the reference columns are and how this grid differs from them, for any dataset."""
    sizes = sorted({m[TRAIN_IMAGES] for m in results if m.get(TRAIN_IMAGES)})
    shortcut = params.model.shortcut
    option, what = SHORTCUT_OPTION.get(shortcut, ("?", shortcut))
    text = (
        f"Like for like: He et al. 2016 Table 6 used shortcut option A (zero padding, no parameters); this grid "
        f"used option {option} ({what}; `model.shortcut: {shortcut}`). He et al. chose "
        f"the schedule on a 45k/5k train/val split; reproductions of Table 6 usually train on all 50k; this grid "
        f"trained on {', '.join(map(str, sizes)) or 'an unrecorded number of'} images. Seeds: "
        f"{len({m['seed'] for m in results})} per cell here; He et al.'s 20-56 and 1202 are single runs and 110 is "
        f"the best of {HE2016_MEAN[110][2]} runs (mean {HE2016_MEAN[110][0]} ± {HE2016_MEAN[110][1]}); akamaster "
        f"reports its best epoch, which is optimistic.\n"
    )
    if shortcut == "projection":
        text += (
            "\n**Warning:** this grid used projection shortcuts (option B); He et al.'s Table 6 is option A "
            "(zero padding). Projections add parameters, so the comparison is not like for like.\n"
        )
    if datasets != ["cifar10"]:
        text += (
            f"\nThe reference columns are CIFAR-10 results of ResNets (`residual_bn`, option A); this grid ran "
            f"on **{', '.join(datasets)}**, so they are context, not a comparison.\n"
        )
    return text


def write_depth_csv(agg: dict, depths: list[int], key: str, path: Path) -> None:
    """Wide CSV for `dvc plots`: depth, then one column per variant, in %; the literal NaN where every seed diverged
    or the cell is absent (`dvc plots` draws an empty field as 0)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", *VARIANTS])
        for d in depths:
            means = [agg[v, d][key]["mean"] if (v, d) in agg else None for v in VARIANTS]
            w.writerow([d] + [f"{100 * m:.4f}" if m is not None else "NaN" for m in means])


def environment_section(runs: Path, results: list[dict]) -> str:
    envs = [
        json.loads(p.read_text())
        for m in results
        if (p := runs / Cell(m["variant"], m["depth"], m["seed"]).name / "env.json").exists()
    ]
    if not envs:
        return "No env.json found in the cells.\n"
    unique = lambda f: sorted({json.dumps(f(e), sort_keys=True) for e in envs})
    lines = []
    for label, f in [
        ("versions", lambda e: e["versions"]),
        ("hardware", lambda e: e["hardware"]),
        ("git commit", lambda e: e["git"]),
        ("data md5", lambda e: e["data_md5"]),
        ("precision, processes", lambda e: [e["precision"], e["world_size"]]),
    ]:
        lines += [f"- {label}: `{u}`" for u in unique(f)]
    return "\n".join(lines) + "\n"


def report(
    params: Params,
    runs: str | Path,
    out: str | Path,
    lr_summary: str | Path | None = None,
    toy_dir: str | Path | None = None,
) -> dict:
    """Write the report into `out`: built whole in a folder beside it, then each of its outputs swapped in
    (metrics.json last); what a killed report left is removed first. Other files in `out` (the toy's) stay."""
    runs, final = Path(runs), Path(out)
    results = collect(params, runs)  # every cell must exist before anything is written
    for message in recover_dir(final):
        print(f"bench report: {message}", flush=True)
    out = temporary(final)
    try:
        summary = _write(params, runs, out, results, lr_summary, toy_dir)
        final.mkdir(parents=True, exist_ok=True)
        for entry in sorted(out.iterdir(), key=lambda p: p.name == "metrics.json"):
            replace_dir(entry, final / entry.name) if entry.is_dir() else os.replace(entry, final / entry.name)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return summary


def _write(params: Params, runs: Path, out: Path, results: list[dict], lr_summary, toy_dir) -> dict:
    agg = aggregate(results)
    variants, depths = list(params.grid.variants), sorted(set(params.grid.depths))
    chance = chance_error(only(m.get(NUM_CLASSES) for m in results))
    figures = out / "figures"
    figures.mkdir(parents=True)
    plot_convergence(results, runs, variants, chance, figures / "convergence.png")
    plot_vs_depth(
        agg,
        variants,
        depths,
        [(TRAIN_ERROR, "final training error (%, log scale)"), (TEST_ERROR, "final test error (%, log scale)")],
        figures / "error_vs_depth.png",
        "Final error vs depth (degradation: plain nets get worse)",
        chance,
    )
    plot_vs_depth(
        agg,
        variants,
        depths,
        [(GAP, "test - training error (percentage points)")],
        figures / "gap_vs_depth.png",
        "Generalisation gap vs depth",
    )
    write_depth_csv(agg, depths, TEST_ERROR, out / "error_vs_depth.csv")
    write_depth_csv(agg, depths, GAP, out / "gap_vs_depth.csv")

    datasets = sorted({m["dataset"] for m in results})
    seeds = sorted({m["seed"] for m in results})
    he = (
        f"### Like for like with He et al. 2016 (residual_bn)\n\nOur mean over seeds against He et al.'s mean of 5 "
        f"runs at 110, and against their single runs elsewhere: there the noise counts our seed spread once more, "
        f"for the spread of their one run.\n\n{like_for_like(agg, depths)}"
        if datasets == ["cifar10"]
        else ""
    )
    md = f"""# Depth ablation: plain vs residual, with and without BatchNorm

Dataset: {", ".join(datasets)}. Seeds: {len(seeds)} ({", ".join(map(str, seeds))}). Cells: {len(results)}, of which
{sum(m[DIVERGED] for m in results)} diverged. Iterations per run: {params.train.max_steps}, batch
{params.train.batch_size}, lr {params.train.lr}, shortcut `{params.model.shortcut}`.

## Final test error (%)

Mean ± sample std over the non-diverged seeds, of the final checkpoint (never the best epoch); n = those seeds.
Diverged seeds (non-finite loss) are counted, not averaged. "At chance / untrained": final training error at
least {AT_CHANCE:g} x chance error{f" ({100 * chance:.0f} %)" if chance else ""}.

{reference_context(params, results, datasets)}
{table(agg, variants, depths)}

{he}
### Differences within the noise

{noise_section(agg, variants, depths)}
### Each run's test error (%), with its 95 % Wilson interval

Binomial in the number of test images each run was scored on (no interval where it was not recorded).

{runs_table(results, variants, depths)}

## Final training error (%)

The degradation problem: deeper plain nets reach a *worse* training error; residual nets do not.

{table(agg, variants, depths, TRAIN_ERROR, refs=False)}

## Figures

![convergence](figures/convergence.png)

Training (dashed) and test (bold) error vs iteration of the first seed, one colour per depth (He et al. Fig. 6
layout), on a log axis (linear below 1 % where an error reaches 0); dotted: chance. An x at the top marks the
step where a run diverged.

![error vs depth](figures/error_vs_depth.png)

Final training and test error vs depth (log2) per variant, mean ± std over the non-diverged seeds; an x at the
top marks a depth where every seed diverged, "k/n div." a mean that lost seeds.

![gap vs depth](figures/gap_vs_depth.png)

Generalisation gap (test - training error) vs depth per variant. A black square rings a cell at chance: its
near-zero gap is a net that learnt nothing, not good generalisation.

{section(runs, results, variants, depths, figures, lr_summary and Path(lr_summary), toy_dir and Path(toy_dir))}
## Environment

{environment_section(runs, results)}"""
    write_text(out / "report.md", md)
    summary = {"cells": len(results), "diverged": sum(m[DIVERGED] for m in results)}
    for (v, d), a in sorted(agg.items()):  # over the non-diverged seeds; null where every seed diverged (or one seed)
        summary[f"{TEST_ERROR}/{v}-{d}"] = a[TEST_ERROR]["mean"]
        summary[f"{TEST_ERROR}_std/{v}-{d}"] = a[TEST_ERROR]["std"]
        summary[f"diverged_fraction/{v}-{d}"] = a["diverged"] / a["seeds"]
    write_json(out / "metrics.json", summary)
    return summary
