"""Do the report's conclusions survive another arithmetic? Retrain the default grid from scratch in a clean copy
of the committed tree under a perturbed arithmetic, and list every claim of report/claims.json whose `holds`
differs from the committed one.

    python benchmarks/arithmetic.py                                  # ATEN_CPU_CAPABILITY=default
    python benchmarks/arithmetic.py --env ONEDNN_MAX_CPU_ISA=AVX2 --env ATEN_CPU_CAPABILITY=default
    python benchmarks/arithmetic.py -S speed.threads=2               # another reduction order
    python benchmarks/arithmetic.py --as-is                          # this machine unperturbed: another CPU type

The perturbation changes a cell's bits on the same machine, as another CPU type does (other vector kernels,
another order of the sums). A claim that flips under it rests on the draw, not on the grid. The copy is
`git worktree add` of HEAD: the committed code and params.yaml, its results deleted, run by `make run`'s two
steps (`bench grid`, `dvc repro`). Writes perf/arithmetic/<name>.json: the perturbation, the machine, both
`holds` maps and the flips; prints the flips. About as long as `make run` from scratch.

On a machine whose CPU type differs from the one the committed results came from (env.json's `cpu` and
`cpu_capability`), `--as-is` retrains with nothing changed: the other CPU type is the perturbation, and the
output is named after it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import cpu_type, same_cpu_type  # noqa: E402


def flips(committed: dict, perturbed: dict) -> list[dict]:
    """Every claim id whose `holds` differs between two claims.json `holds` maps (a claim in one only counts)."""
    ids = list(dict.fromkeys([*committed, *perturbed]))
    return [
        {"id": i, "committed": committed.get(i, "absent"), "perturbed": perturbed.get(i, "absent")}
        for i in ids
        if committed.get(i, "absent") != perturbed.get(i, "absent")
    ]


def set_params(path: Path, overrides: list[str]) -> None:
    """section.key=value (a YAML value) into params.yaml, as `dvc exp run -S` would (comments are not kept)."""
    if not overrides:
        return
    params = yaml.safe_load(path.read_text())
    for o in overrides:
        key, value = o.split("=", 1)
        section, name = key.split(".", 1)
        params[section][name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def committed_hardware() -> dict:
    """The CPU type the committed results came from: the hardware of a committed cell's env.json."""
    return json.loads(next(ROOT.glob("runs/*/env.json")).read_text())["hardware"]


def retrain(copy: Path, env: dict, overrides: list[str]) -> dict:
    """`make run`'s steps in `copy` with its results deleted; the new report/claims.json."""
    for path in [*copy.glob("runs/*/"), copy / "report", copy / "runs_lr" / "summary.json"]:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    bin_dir = Path(sys.executable).parent
    run_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(copy)}
    set_params(copy / "params.yaml", overrides)
    for cmd in (["bench", "grid", "--jobs", "2"], ["dvc", "repro", "--quiet"]):
        subprocess.run(cmd, cwd=copy, env=run_env, check=True)
    return json.loads((copy / "report" / "claims.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="an environment variable")
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a param")
    parser.add_argument("--as-is", action="store_true", help="no perturbation: this machine's own CPU type")
    parser.add_argument("--name", help="the output's name (default: from the perturbation)")
    args = parser.parse_args(argv)
    if args.as_is and (args.env or args.overrides):
        parser.error("--as-is perturbs nothing: it takes no --env or -S")
    unset = {} if args.as_is or args.overrides else {"ATEN_CPU_CAPABILITY": "default"}
    env = dict(e.split("=", 1) for e in args.env) or unset
    name = args.name or "_".join(f"{k}={v}" for k, v in [*env.items(), *(o.split("=", 1) for o in args.overrides)])
    if args.as_is:
        if same_cpu_type(committed_hardware(), cpu_type()):
            parser.error("--as-is: this machine's CPU type is the committed results' own: nothing would differ")
        name = args.name or "cpu={cpu}_{cpu_capability}".format(**cpu_type()).replace(" ", "-")
    committed = json.loads((ROOT / "report" / "claims.json").read_text())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bench"
        subprocess.run(["git", "worktree", "add", "--quiet", "--detach", copy, "HEAD"], cwd=ROOT, check=True)
        try:
            perturbed = retrain(copy, env, args.overrides)
            env_json = json.loads(next(copy.glob("runs/*/env.json")).read_text())
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", copy], cwd=ROOT, check=False)
    found = flips(committed["holds"], perturbed["holds"])
    out = {
        "perturbation": {"env": env, "params": args.overrides},
        "commit": env_json["git"]["commit"],
        "hardware": env_json["hardware"],
        "versions": env_json["versions"],
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "committed": committed["holds"],
        "committed_sentences": [c["sentence"] for c in committed["claims"]],
        "perturbed": perturbed["holds"],
        "perturbed_sentences": [c["sentence"] for c in perturbed["claims"]],
        "flips": found,
    }
    path = ROOT / "perf" / "arithmetic" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(found)} of {len(committed['holds'])} claims flip under {name}: {path.relative_to(ROOT)}")
    for f in found:
        print(f"- {f['id']}: {f['committed']} -> {f['perturbed']}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
