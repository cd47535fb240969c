"""Do fewer seeds carry the same conclusions? Recompute every claim from each k-seed subset of a grid trained at more
seeds, and compare each verdict with the one from all of them.

    python benchmarks/seed_subsets.py --runs RUNS --studies REPORT --seeds 0,1,2,3,4 --k 3

RUNS holds the cells (a `make run` at those seeds); REPORT the studies' folders (toy/, landscape/, curvature/,
paths/) of the same `make run`, and its lr sweep's summary (--lr-sweep). Each subset's report is `bench report` with
`grid.seeds` set to the subset and the studies' JSON files cut to the subset's cells, so the claims are the report's
own. Writes perf/seed_subsets/subsets-of-K.json: each claim's verdict from all the seeds, the subsets that agree,
and the margin of its nearest subset (|centre| / half-width of the interval: below 1, it holds 0). About a minute.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import environment  # noqa: E402

STUDIES = {"landscape": "landscape.json", "curvature": "curvature.json", "paths": "paths.json"}


def cut(studies: Path, seeds: tuple[int, ...], into: Path) -> None:
    """The studies' folders under `into`, each JSON file's cells only those of `seeds` (the figures are not read)."""
    (into / "toy").symlink_to((studies / "toy").resolve())
    for study, name in STUDIES.items():
        summary = json.loads((studies / study / name).read_text())
        summary["cells"] = {k: v for k, v in summary["cells"].items() if int(k.rsplit("-", 1)[1]) in seeds}  # V-D-S
        (into / study).mkdir()
        (into / study / name).write_text(json.dumps(summary))


def report(runs: Path, studies: Path, lr_sweep: Path, seeds: tuple[int, ...], where: Path) -> list[dict]:
    """The claims of `bench report` over `seeds`' cells alone."""
    where.mkdir()
    cut(studies, seeds, where)
    cmd = [sys.executable, "-m", "bench", "report", "--runs", str(runs), "--out", str(where / "out")]
    cmd += ["--lr-sweep", str(lr_sweep)]
    cmd += [a for study in ("toy", *STUDIES) for a in (f"--{study}", str(where / study))]
    r = subprocess.run([*cmd, f"grid.seeds=[{','.join(map(str, seeds))}]"], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"bench report over seeds {seeds} failed:\n{r.stderr[-2000:]}")
    return json.loads((where / "out" / "claims.json").read_text())["claims"]


def margin(claim: dict) -> float | None:
    """|centre| / half-width of the claim's interval; None where it has none (not shown for want of cells)."""
    interval = (claim.get("statistic") or {}).get("interval")
    if not interval or None in interval:
        return None
    low, high = interval
    return abs(low + high) / (high - low) if high > low else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="the cells' folder (default: runs)")
    ap.add_argument("--studies", type=Path, default=ROOT / "report", help="the studies' folders (default: report)")
    ap.add_argument("--lr-sweep", type=Path, default=ROOT / "runs_lr/summary.json", help="the sweep's summary")
    ap.add_argument("--seeds", required=True, help="the seeds the grid was trained at, e.g. 0,1,2,3,4")
    ap.add_argument("--k", type=int, required=True, help="seeds per subset")
    a = ap.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    if not 2 <= a.k < len(seeds):
        ap.error(f"--k must be at least 2 and fewer than the {len(seeds)} seeds")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        full = report(a.runs, a.studies, a.lr_sweep, seeds, Path(tmp) / "all")
        subsets = list(itertools.combinations(seeds, a.k))
        by_subset = {s: report(a.runs, a.studies, a.lr_sweep, s, Path(tmp) / "-".join(map(str, s))) for s in subsets}
    claims = {}
    for c in full:
        theirs = [next((x for x in by_subset[s] if x["id"] == c["id"]), None) for s in subsets]
        if None in theirs:
            sys.exit(f"claim {c['id']} is missing from the report over seeds {subsets[theirs.index(None)]}")
        margins = [m for x in theirs if (m := margin(x)) is not None]
        claims[c["id"]] = {
            "all": c["holds"],
            "sentence": c["sentence"],
            "subsets": {"-".join(map(str, s)): x["holds"] for s, x in zip(subsets, theirs)},
            "agree": sum(x["holds"] == c["holds"] for x in theirs),
            "nearest_margin": round(min(margins), 3) if margins else None,
        }
    env = json.loads(next(a.runs.glob("*/env.json")).read_text())
    now = environment()
    out = {
        "seeds": list(seeds),
        "k": a.k,
        "subsets": len(subsets),
        "runs_commit": env["git"]["commit"],  # the commit the cells were trained at
        "commit": now["git"]["commit"],  # the report's code
        "dirty": now["git"]["dirty"],
        "hardware": env["hardware"],
        "versions": env["versions"],
        "seconds": round(time.perf_counter() - start, 1),
        "claims": claims,
    }
    path = ROOT / "perf/seed_subsets" / f"subsets-of-{a.k}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for i, c in claims.items():
        print(f"{i}: {c['all']} from all {len(seeds)} seeds; {c['agree']} of {len(subsets)} subsets of {a.k} agree")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
