"""Copy report/results.md into README.md's results section, between its two markers: the README's numbers and
findings are the report's, never typed. `python -m bench.report.readme` (make run does it last, and prints the
results table)."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.files import write_text

START = "<!-- results: generated from report/results.md by `python -m bench.report.readme`; do not edit -->"
END = "<!-- end of results -->"


def section(readme: str) -> str:
    """The text between the markers; a ValueError where they are missing or out of order."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no results section between the markers {START!r} and {END!r}")
    return readme[start + len(START) : end].strip("\n") + "\n"


def splice(readme: str, results: str) -> str:
    """`readme` with its results section replaced by `results`."""
    section(readme)  # checks the markers
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{results.strip()}\n{END}{rest.split(END, 1)[1]}"


def main(readme: str = "README.md", results: str = "report/results.md") -> int:
    try:
        text = splice(Path(readme).read_text(), Path(results).read_text())
    except (OSError, ValueError) as e:
        print(f"bench.report.readme: {e}", file=sys.stderr)
        return 2
    write_text(readme, text)
    table = [line for line in Path(results).read_text().splitlines() if line.startswith("|")]
    print("\n".join([f"{readme}: results from {results} (test error %, mean ± std, n: each seed)", *table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
