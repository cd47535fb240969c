"""An offline wheelhouse: a package and everything it needs, at this venv's versions, as wheels for a
machine that cannot reach a package index, and their installation there.

    .venv/bin/python dev/offline_wheels.py [--package dvc] [--out .whl] [--python-version 3.12]
    .venv/bin/python dev/offline_wheels.py --list                      # the closure, downloading nothing
    python3 dev/offline_wheels.py --missing [--out .whl]               # there: the wheels of what it lacks
    python3 dev/offline_wheels.py --install DIR [--out .whl]           # there: install those into DIR

The set is the package's dependency closure as installed here, pinned to the versions tested here, as
manylinux x86-64 cp wheels for `--python-version`; packages published only as source are built into
wheels here. dvc 3.67.1: 97 wheels, 29 MB. A lightning wheel put beside them (pip download --no-deps
lightning==2.6.6 -d .whl) replaces whatever lightning the machine has: 2.6.2 and 2.6.3 on PyPI were
malicious. `--install DIR` goes ahead of the machine's packages once DIR is first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import glob
import re
import subprocess
import sys
import zipfile
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


def installed(name: str) -> str | None:
    """The version of distribution `name` this Python has, or None."""
    try:
        return metadata.version(canonical(name))
    except metadata.PackageNotFoundError:
        return None


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


def download(pins: dict[str, str], out: str, python_version: str) -> list[str]:
    """Each pinned distribution as a binary wheel for the target, else built here; the ones built here."""
    binary = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
    binary += ["--python-version", python_version, "--implementation", "cp", "-d", out]
    binary += [x for p in PLATFORMS for x in ("--platform", p)]
    source_only = [
        f"{n}=={v}"
        for n, v in sorted(pins.items())
        if subprocess.run([*binary, f"{n}=={v}"], capture_output=True).returncode
    ]
    if source_only:  # pure-Python packages published as sdists only (antlr4-python3-runtime 4.9.3, say)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, *source_only], check=True)
    return source_only


def missing(folder: str) -> list[str]:
    """The wheels in `folder` whose distributions this Python lacks, and lightning's if this Python has another
    lightning than the wheel's."""
    wheels = []
    for wheel in sorted(glob.glob(f"{folder}/*.whl")):
        name, version = Path(wheel).name.split("-")[:2]
        have = installed(name)
        if have is None or (canonical(name) == "lightning" and have != version):
            wheels.append(wheel)
    return wheels


def install(folder: str, target: str) -> list[str]:
    """Install into `target` the wheels `missing` names: by pip where it runs, else unpacked (these wheels hold
    their files and no .data folder). The wheels installed."""
    wheels = missing(folder)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    if wheels and subprocess.run([*pip, "--target", target, *wheels], capture_output=True).returncode:
        for wheel in wheels:
            zipfile.ZipFile(wheel).extractall(target)
    return wheels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default="dvc", help="the installed distribution to collect, with its closure")
    ap.add_argument("--out", default=".whl", help="the wheelhouse (default: .whl)")
    ap.add_argument("--python-version", default="3.12", help="the target machine's Python (default 3.12)")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="print the closure as name==version, download nothing")
    what.add_argument("--missing", action="store_true", help="print the wheels in --out this Python lacks")
    what.add_argument("--install", metavar="DIR", help="install the wheels in --out this Python lacks into DIR")
    a = ap.parse_args()
    if a.list:
        print("\n".join(f"{n}=={v}" for n, v in sorted(closure(a.package).items())))
    elif a.missing:
        for wheel in missing(a.out):
            print(wheel)
    elif a.install:
        wheels = install(a.out, a.install)
        print(f"installed {len(wheels)} wheels from {a.out}/ into {a.install}: {' '.join(wheels) or 'none missing'}")
    else:
        pins = closure(a.package)
        built = download(pins, a.out, a.python_version)
        print(f"{len(pins)} distributions in {a.out}/ ({len(built)} built here: {', '.join(built) or 'none'})")


if __name__ == "__main__":
    main()
