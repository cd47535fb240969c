"""The claims checks under another arithmetic, as tables computed from perf/arithmetic/*.json (arithmetic.py's
output), perf/seeds/*.json (seeds.py's) and perf/seed_subsets/*.json (seed_subsets.py's), written into
docs/claims.md between its `<!-- arithmetic checks -->` markers:

    python benchmarks/arithmetic_table.py            # print the table
    python benchmarks/arithmetic_table.py --write    # rewrite the document's block
    python benchmarks/arithmetic_table.py --check    # exit 1 if the block differs from the JSON files
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import blocks

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "perf/arithmetic"
SEEDS = ROOT / "perf/seeds"
SUBSETS = ROOT / "perf/seed_subsets"
DOCUMENT = ROOT / "docs/claims.md"
BEGIN, END = "<!-- arithmetic checks -->", "<!-- end of arithmetic checks -->"


def perturbation(check: dict) -> str:
    """What differed from the committed results' own run: the environment, the params, or the machine."""
    p = check["perturbation"]
    changed = [f"`{k}={v}`" for k, v in p["env"].items()] + [f"`-S {o}`" for o in p["params"]]
    return ", ".join(changed) if changed else "nothing: another CPU type"


def verdict(holds: bool | str) -> str:
    return {True: "holds", False: "does not hold"}.get(holds, str(holds))


VERDICT = re.compile(r": (holds|does not hold|not shown) \(")  # where a claim's sentence turns to its verdict


def statistic(sentence: str) -> str:
    """What a claim's sentence says after the claim itself: its verdict and statistic (bench/report/verdict.py)."""
    found = VERDICT.search(sentence)
    return sentence[found.start() + 2 :].rstrip(".") if found else ""


def claim_of(sentence: str) -> str | None:
    """The claim a sentence states, before its verdict."""
    found = VERDICT.search(sentence)
    return sentence[: found.start()] if found else None


def flipped(check: dict) -> str:
    """Each flip: the committed verdict and statistic, then the retrained one (each report's own sentence)."""
    if not check["flips"]:
        return "none"
    committed = dict(zip(check["committed"], check["committed_sentences"]))  # both in the report's claim order
    lines = []
    for f in check["flips"]:
        before = committed.get(f["id"], "")
        claim = claim_of(before)
        after = next((s for s in check["perturbed_sentences"] if claim and claim_of(s) == claim), "")
        before, after = statistic(before), statistic(after)
        lines.append(f"`{f['id']}`: {before or verdict(f['committed'])} -> {after or verdict(f['perturbed'])}")
    return "; ".join(lines)


def seeds(check: dict) -> int:
    """The seeds of the committed grid the check retrained: the largest n its claims state ("n = 5, 5")."""
    stated = (re.findall(r"(?:n = |, )(\d+)(?=[,)])", sentence) for sentence in check["committed_sentences"])
    return max(int(n) for ns in stated for n in ns)


def row(check: dict, claims: dict) -> str:
    hw, v = check["hardware"], check["versions"]
    machine = f"{hw['cpu_count']}-core {hw['cpu']}, {hw['cpu_capability']} kernels, torch {v['torch']}"
    same = check["committed_sentences"] == [c["sentence"] for c in claims["claims"]]
    stale = "" if same else " (an earlier report)"
    kept = len(check["committed"]) - len(check["flips"])
    return (
        f"| {perturbation(check)} | {machine} | {check['commit'][:7]}{stale} | {seeds(check)} | "
        f"{check['minutes']} min | "
        f"{kept} of {len(check['committed'])} | {flipped(check)} |"
    )


def seeds_table(study: dict) -> str:
    """seeds.py's claims, by arithmetic and number of seeds."""
    hw, v = study["hardware"]["native"], study["versions"]
    head = (
        f"The two claims that flipped, from {' and '.join(study['cells'])} retrained at {study['seeds']} seeds "
        f"(`benchmarks/seeds.py`, {hw['cpu_count']}-core {hw['cpu']}, {hw['cpu_capability']} kernels natively, "
        f"torch {v['torch']}, commit {study['commit'][:7]}{' with local changes' * bool(study['dirty'])}, "
        f"{study['minutes']} min):"
    )
    rows = []
    for arith, by_n in study["claims"].items():
        for n, by_id in by_n.items():
            for i, c in by_id.items():
                rows.append(f"| {arith} | {n} | `{i}` | {statistic(c['sentence'])} |")
    return "\n".join(
        [head, "", "| arithmetic | seeds | claim | verdict |", "|---|---|---|---|", *rows, "", summary(study)]
    )


def summary(study: dict) -> str:
    """For each number of seeds: the claims that hold under every arithmetic, and those that do not."""
    said, k = [], len(study["claims"])
    arithmetics = "both arithmetics" if k == 2 else f"all {k} arithmetics"
    for n in next(iter(study["claims"].values())):
        verdicts = {}
        for by_n in study["claims"].values():
            for i, c in by_n[n].items():
                verdicts.setdefault(i, []).append(c["holds"])
        steady = [f"`{i}`" for i, v in verdicts.items() if all(h is True for h in v)]
        other = [f"`{i}`" for i, v in verdicts.items() if not all(h is True for h in v)]
        parts = [f"{' and '.join(steady)} hold{'s' * (len(steady) == 1)}"] if steady else []
        parts += [f"{' and '.join(other)} not under every one"] if other else []
        said.append(f"At {n} seeds, under {arithmetics}: {'; '.join(parts)}.")
    return " ".join(said)


def subsets_table(study: dict) -> str:
    """seed_subsets.py's verdicts: each claim's from all the seeds, and how many of the k-seed subsets agree."""
    hw, v, n, k = study["hardware"], study["versions"], len(study["seeds"]), study["k"]
    head = (
        f"Every claim from each {k} of the {n} seeds of one grid (`benchmarks/seed_subsets.py`: cells trained at "
        f"commit {study['runs_commit'][:7]} on a {hw['cpu_count']}-core {hw['cpu']}, {hw['cpu_capability']} kernels, "
        f"torch {v['torch']}; reports at commit {study['commit'][:7]}{' with local changes' * bool(study['dirty'])}). "
        f"The margin is the nearest subset's |centre| / half-width of its interval: below 1, the interval holds 0."
    )
    margin = lambda m: "" if m is None else f"{m:.2f}"
    rows = [
        f"| `{i}` | {verdict(c['all'])} | {c['agree']} of {study['subsets']} | {margin(c['nearest_margin'])} |"
        for i, c in study["claims"].items()
    ]
    head_row = f"| claim | from all {n} seeds | subsets of {k} that agree | nearest margin |"
    return "\n".join([head, "", head_row, "|---|---|---|---|", *rows])


def table() -> str:
    claims = json.loads((ROOT / "report/claims.json").read_text())
    checks = [json.loads(p.read_text()) for p in sorted(CHECKS.glob("*.json"))]
    head = "| perturbation | machine | commit | seeds | time | claims kept | flips: committed -> retrained |"
    tables = ["\n".join([head, "|---|---|---|---|---|---|---|", *(row(c, claims) for c in checks)])]
    tables += [seeds_table(json.loads(p.read_text())) for p in sorted(SEEDS.glob("*.json"))]
    tables += [subsets_table(json.loads(p.read_text())) for p in sorted(SUBSETS.glob("*.json"))]
    return "\n\n".join(tables)


def main() -> None:
    blocks.main(
        __doc__.split("\n\n")[0],
        table,
        [DOCUMENT],
        (BEGIN, END),
        "perf/arithmetic/, perf/seeds/ and perf/seed_subsets/",
    )


if __name__ == "__main__":
    main()
