"""A table computed from JSON files under perf/, kept in documents between two HTML comment markers: printed,
rewritten (--write), or checked (--check: exit 1 where a document's block differs). gpu_table.py and
arithmetic_table.py are its two uses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def replaced(document: str, text: str, begin: str, end: str) -> str:
    """`document` with the text between its `begin` and `end` markers (inclusive) replaced by `text` in them."""
    start, stop = document.index(begin), document.index(end) + len(end)
    return f"{document[:start]}{begin}\n{text}\n{end}{document[stop:]}"


def main(description: str, table: Callable[[], str], documents: list[Path], markers: tuple[str, str], source: str):
    """The command line of a table script: `source` names the JSON files' folder in the --check message."""
    ap = argparse.ArgumentParser(description=description)
    what = ap.add_mutually_exclusive_group()
    names = " and ".join(p.name for p in documents)
    what.add_argument("--write", action="store_true", help=f"rewrite the block of {names}")
    what.add_argument("--check", action="store_true", help=f"exit 1 if a block differs from {source}")
    a = ap.parse_args()
    text = table()
    if not (a.write or a.check):
        print(text)
        return
    stale = []
    for path in documents:
        document = path.read_text()
        if (new := replaced(document, text, *markers)) != document:
            stale.append(path.name)
            if a.write:
                path.write_text(new)
    if a.check and stale:
        sys.exit(f"{Path(sys.argv[0]).name}: {', '.join(stale)} differ from {source} (--write rewrites them)")
