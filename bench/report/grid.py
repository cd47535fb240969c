"""The grid's results over seeds: per variant x depth, the mean ± std of the final errors and the gap over the
non-diverged seeds, as tables beside He et al. 2016 Table 6 and akamaster's reproduction, and as CSV for
`dvc plots`.
"""

from __future__ import annotations

import csv
import io
import json

from bench.config import Params
from bench.record import GAP, NUM_CLASSES, TEST_ERROR, TEST_IMAGES, TRAIN_ERROR, VARIANTS, Metrics, Run
from bench.report.markdown import plus_minus, table
from bench.report.noise import at_chance, noise_stats
from bench.report.stats import difference_noise, summarise

# CIFAR-10 test error (%) of ResNets (residual_bn, option A), as printed. He et al. 2016 Table 6: single runs,
# except 110, the best of 5 runs; akamaster/pytorch_resnet_cifar10 reports its best epoch, which is optimistic.
HE2016 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
HE2016_MEAN = {110: (6.61, 0.16, 5)}  # Table 6's "best (mean ± std)": what a mean over seeds is compared with
HE2016B = {110: 6.37}  # He et al. 2016b, the full pre-activation ResNet-110 (residual_preact): a median of 5 runs
AKAMASTER = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32, 1202: 6.18}
CIFAR10_TEST_IMAGES = 10_000
SHORTCUT_OPTION = {"zero_pad": ("A", "zero padding, no parameters"), "projection": ("B", "1x1 projections")}


def variants_depths(params: Params) -> tuple[list[str], list[int]]:
    """The grid's variants, in params' order, and its depths, ascending, each once: the rows and columns of every
    table."""
    return list(dict.fromkeys(params.grid.variants)), sorted(set(params.grid.depths))


def by_cell(results: list) -> dict[tuple[str, int], list]:
    """(variant, depth) -> its seeds' records (Metrics or Run), by seed; a cell listed twice counts once."""
    groups = {}
    for r in sorted({r.cell: r for r in results}.values(), key=lambda r: r.cell.seed):
        groups.setdefault((r.cell.variant, r.cell.depth), []).append(r)
    return groups


def only(values) -> int | None:
    """The one value of a field the seeds share (their test set's size, the classes); None where they differ."""
    known = set(values)
    return known.pop() if len(known) == 1 else None


def aggregate(results: list[Metrics]) -> dict[tuple[str, int], dict]:
    """Per (variant, depth): seeds, diverged seeds, seeds at chance, the test set's size, and mean/std of test error,
    training error and gap over the non-diverged seeds."""
    agg = {}
    for key, ms in by_cell(results).items():
        ok = [m for m in ms if not m.diverged]
        agg[key] = {
            "seeds": len(ms),
            "diverged": len(ms) - len(ok),
            "at_chance": sum(map(at_chance, ok)),
            "diverged_steps": [m.diverged_step for m in ms if m.diverged],
            TEST_IMAGES: only(m.test_images for m in ms),
            NUM_CLASSES: only(m.num_classes for m in ms),
            TEST_ERROR: summarise([m.test_error for m in ok]),
            TRAIN_ERROR: summarise([m.clean_train_error for m in ok]),  # the final weights, eval mode, no augmentation
            GAP: summarise([m.gap for m in ok]),
        }
    return agg


def fmt_cell(a: dict, key: str = TEST_ERROR) -> str:
    """ "mean ± std (n=non-diverged seeds; k/seeds diverged; at chance)", or "diverged (3/3)"."""
    s = a[key]
    if s["n"] == 0:
        return f"diverged ({a['diverged']}/{a['seeds']})" if a["diverged"] else "–"
    seeds = ", ".join(f"{100 * v:.2f}" for v in s["values"])
    notes = [f"n={s['n']}: {seeds}" if s["n"] > 1 else "n=1"]
    notes += [f"{a['diverged']}/{a['seeds']} diverged"] if a["diverged"] else []
    if a["at_chance"]:
        notes.append("at chance / untrained" if a["at_chance"] == s["n"] else f"{a['at_chance']}/{s['n']} at chance")
    return f"{plus_minus(s['mean'], s['std'], scale=100)} ({'; '.join(notes)})"


def he_reference(depth: int) -> str:
    """He et al. 2016 Table 6 at `depth`, saying what the number is: a single run, or a mean of runs."""
    if depth in HE2016_MEAN:
        mean, std, runs = HE2016_MEAN[depth]
        return f"{plus_minus(mean, std)} (mean of {runs} runs; best {HE2016[depth]:.2f})"
    return f"{HE2016[depth]:.2f} (single run)" if depth in HE2016 else ""


def error_table(agg: dict, variants: list[str], depths: list[int], key: str = TEST_ERROR, refs: bool = True) -> str:
    """One row per depth, one column per variant; with `refs`, He et al.'s and akamaster's numbers beside."""
    head = ["depth", *variants] + (["He et al. 2016", "akamaster (best epoch)"] if refs else [])
    rows = []
    for d in depths:
        row = [str(d)] + [fmt_cell(agg[v, d], key) if (v, d) in agg else "" for v in variants]
        if refs:
            row += [he_reference(d), f"{AKAMASTER[d]:.2f}" if d in AKAMASTER else ""]
        rows.append(row)
    return table(head, rows)


def versus(ours: dict, start: list[str], mean: float, std: float | None, runs: int) -> list[str]:
    """A like-for-like row: our mean over seeds minus the paper's, against the noise of both (a single run of the
    paper's counts our seed spread once more, for its own)."""
    mine = noise_stats(ours)
    if mine["mean"] is None:  # every seed diverged
        return [*start, "", "", ""]
    std = std if std is not None else mine["std"] and 100 * mine["std"]
    paper = {"mean": mean / 100, "std": std and std / 100, "n": runs, "test_images": CIFAR10_TEST_IMAGES}
    diff, noise = 100 * (mine["mean"] - paper["mean"]), 100 * difference_noise(mine, paper)
    return [*start, f"{diff:+.2f}", f"{noise:.2f}", "yes" if abs(diff) < noise else "no"]


def like_for_like(agg: dict, depths: list[int]) -> str:
    """Our residual_bn mean over seeds against He et al. at each of their depths: a mean of runs (110) against
    their mean of 5; a single run against our mean, with our seed spread standing in for a single run's spread."""
    head = ["depth", "ours: residual_bn", "He et al. 2016", "Δ (ours - He)", "noise ±", "within noise"]
    rows = []
    for d in [d for d in depths if d in HE2016 and ("residual_bn", d) in agg]:
        mean, std, runs = HE2016_MEAN.get(d, (HE2016[d], None, 1))
        rows.append(
            versus(agg["residual_bn", d], [str(d), fmt_cell(agg["residual_bn", d]), he_reference(d)], mean, std, runs)
        )
    return table(head, rows) + "\n" if rows else "No residual_bn cell at a depth of He et al.'s Table 6.\n"


def preact_like_for_like(agg: dict, depths: list[int]) -> str:
    """Our residual_preact mean over seeds against He et al. 2016b's median of 5 runs (no spread given: our seed
    spread stands in for theirs), or "" where the grid has no residual_preact cell at their depths."""
    head = ["depth", "ours: residual_preact", "He et al. 2016b", "Δ (ours - He)", "noise ±", "within noise"]
    rows = [
        versus(
            agg["residual_preact", d],
            [str(d), fmt_cell(agg["residual_preact", d]), f"{HE2016B[d]:.2f} (median of 5)"],
            HE2016B[d],
            None,
            1,
        )
        for d in depths
        if d in HE2016B and ("residual_preact", d) in agg
    ]
    return table(head, rows) + "\n" if rows else ""


def reference_context(params: Params, results: list[Metrics], datasets: list[str]) -> str:
    """What the reference columns are and how this grid differs from them, for any dataset."""
    shortcut = params.model.shortcut
    option, what = SHORTCUT_OPTION.get(shortcut, ("?", shortcut))
    mean, std, runs = HE2016_MEAN[110]
    text = (
        f"Like for like: He et al. 2016 Table 6 used shortcut option A (zero padding, no parameters); this grid "
        f"used option {option} ({what}; `model.shortcut: {shortcut}`). He et al. chose "
        f"the schedule on a 45k/5k train/val split; reproductions of Table 6 usually train on all 50k; this grid "
        f"trained on {', '.join(map(str, sorted({m.train_images for m in results})))} images. Seeds: "
        f"{len({m.seed for m in results})} per cell here; He et al.'s 20-56 and 1202 are single runs and 110 is "
        f"the best of {runs} runs (mean {plus_minus(mean, std)}); akamaster reports its best epoch, which is "
        f"optimistic.\n"
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


def depth_csv(agg: dict, depths: list[int], key: str) -> str:
    """Wide CSV for `dvc plots`: depth, then one column per variant, in %; the literal NaN where every seed diverged
    or the cell is absent (`dvc plots` draws an empty field as 0)."""
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(["depth", *VARIANTS])
    for d in depths:
        means = [agg[v, d][key]["mean"] if (v, d) in agg else None for v in VARIANTS]
        w.writerow([d] + [f"{100 * m:.4f}" if m is not None else "NaN" for m in means])
    return f.getvalue()


ENVIRONMENT = (  # (label, what of env.json)
    ("versions", lambda e: e["versions"]),
    ("hardware", lambda e: e["hardware"]),
    ("git commit", lambda e: e["git"]),
    ("data md5", lambda e: e["data_md5"]),
    ("precision, processes", lambda e: [e["precision"], e["world_size"]]),
)


def environment_section(results: list[Run]) -> str:
    """Each distinct version set, machine, commit, data checksum and precision the cells ran with."""
    lines = []
    for label, part in ENVIRONMENT:
        lines += [f"- {label}: `{u}`" for u in sorted({json.dumps(part(r.env), sort_keys=True) for r in results})]
    return "\n".join(lines) + "\n"


SUMMARY_MEASURES = {  # the report's metrics.json, per variant x depth: key -> its value; in `dvc metrics show`'s order
    "diverged_fraction": lambda a: a["diverged"] / a["seeds"],
    TEST_ERROR: lambda a: a[TEST_ERROR]["mean"],
    f"{TEST_ERROR}_std": lambda a: a[TEST_ERROR]["std"],
}


def depth_key(depth: int) -> str:
    """A depth as a metrics key, zero-padded ("0020"): `dvc metrics show` sorts keys as text, so 8, 20, 110 stay in
    order."""
    return f"{depth:04d}"


def summary(results: list[Metrics], agg: dict) -> dict:
    """The report's metrics.json: cells, diverged cells, then per measure {variant: {depth: value}}: the diverged
    fraction, and the mean and std of the test error over the non-diverged seeds (null where every seed diverged, or
    for the std of one seed). `dvc metrics show` flattens it to columns such as test/error.plain.0056 and sorts them
    as text: the file's own order, by measure, variant, then depth."""
    out: dict = {"cells": len(results), "diverged": sum(m.diverged for m in results)}
    for name, value in SUMMARY_MEASURES.items():
        out[name] = {}
        for (v, d), a in sorted(agg.items()):
            out[name].setdefault(v, {})[depth_key(d)] = value(a)
    return out
