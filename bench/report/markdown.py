"""The report's two ways of writing numbers and rows as Markdown: a mean ± std, and a table."""

from __future__ import annotations


def plus_minus(mean: float, std: float | None, form: str = ".2f", std_form: str | None = None, scale=1) -> str:
    """ "mean ± std" of `scale` x each, in the format `form` (the std in `std_form`, if given); the mean alone
    where the std is unmeasured (one seed)."""
    text = f"{scale * mean:{form}}"
    return text + (f" ± {scale * std:{std_form or form}}" if std is not None else "")


def table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the header, its rule, one line per row; an empty string is an empty cell."""
    return "\n".join([row(head), "|" + "---|" * len(head), *map(row, rows)])


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
