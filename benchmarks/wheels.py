"""An offline wheelhouse: a package and everything it needs, at this venv's versions, as wheels for a
machine that cannot reach a package index (a GPU node, an air-gapped cluster).

    .venv/bin/python benchmarks/wheels.py [--package dvc] [--out .whl] [--python-version 3.12]
    python3 benchmarks/wheels.py --missing [--out .whl]   # there: the wheels of what it lacks
    pip install --no-index --find-links .whl dvc          # there: install from them

benchmarks/gpu.sh's grid slice runs `bench grid`, which needs dvc; a machine that has PyTorch but
cannot reach PyPI gets it from this folder (gpu.sh installs it with --no-index --no-deps into
/tmp/site). The set is dvc's dependency closure as installed here, pinned to the versions tested
here, as manylinux x86-64 wheels for `--python-version`; packages published only as source are
built into wheels here. 97 wheels, 29 MB (dvc 3.67.1).
"""

from __future__ import annotations

import argparse
import glob
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PLATFORMS = (
    "manylinux_2_34_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str) -> dict[str, str]:
    """{distribution: installed version} for `root` and every requirement it needs here (no extras)."""
    seen, todo = {}, [root]
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python (its marker excluded it here)
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return seen


def missing(folder: str) -> list[str]:
    """The wheels in `folder` whose distributions this Python lacks."""

    def installed(wheel: str) -> bool:
        try:
            metadata.distribution(canonical(Path(wheel).name.split("-")[0]))
            return True
        except metadata.PackageNotFoundError:
            return False

    return [w for w in sorted(glob.glob(f"{folder}/*.whl")) if not installed(w)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--package",
        default="dvc",
        help="the installed distribution to collect, with its "
        "dependency closure (default: dvc, which benchmarks/gpu.sh needs)",
    )
    ap.add_argument("--out", default=".whl")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    ap.add_argument(
        "--missing",
        action="store_true",
        help="print the wheels in --out whose distributions this Python lacks, and download nothing",
    )
    a = ap.parse_args()
    if a.missing:
        for wheel in missing(a.out):
            print(wheel)
        return
    pins = closure(a.package)
    binary = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "--python-version",
        a.python_version,
        "--implementation",
        "cp",
        "-d",
        a.out,
        *(x for p in PLATFORMS for x in ("--platform", p)),
    ]
    source_only = []
    for name, version in sorted(pins.items()):
        if subprocess.run([*binary, f"{name}=={version}"], capture_output=True).returncode:
            source_only.append(f"{name}=={version}")
    if source_only:  # pure-Python packages published as sdists only (antlr4-python3-runtime 4.9.3, say)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", a.out, *source_only], check=True)
    print(f"{len(pins)} distributions in {a.out}/ ({len(source_only)} built here: {', '.join(source_only) or 'none'})")


if __name__ == "__main__":
    main()
