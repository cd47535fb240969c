"""report/index.html: report.md rendered as one self-contained HTML page, to read the report offline in any browser.

Python-Markdown (its `tables` extension) converts report.md's text as it is; the page carries its own small
stylesheet and loads nothing else: no script, no external stylesheet, no font. The figures stay relative links to the
PNGs the report writes beside the page (figures/*.png, toy/toy_shattering.png), which a browser resolves from the
folder on disk: a page of tens of kB rather than one that repeats several MB of committed PNGs in base64 (data URIs).
So open report/index.html where it lies, or copy the whole folder. A pure function of the Markdown (and the names of
the files it links to at its foot): it writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import markdown

PAGE = "index.html"
EXTENSIONS = ["tables"]
UNTITLED = "Report"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5; color: #1b1b1b;
       max-width: 70rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1, h2, h3 { line-height: 1.25; margin-top: 2rem; }
h1 { margin-top: 0.5rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
       background: #f3f3f3; padding: 0.05em 0.3em; border-radius: 3px; }
.table { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #c8c8c8; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: 1rem 0; }
li { margin: 0.2rem 0; }
footer { margin-top: 3rem; border-top: 1px solid #c8c8c8; color: #555; font-size: 0.9rem; }
"""


def title(md: str) -> str:
    """The document's first level-1 heading ("# ..."), else UNTITLED."""
    return next((line[2:].strip() for line in md.splitlines() if line.startswith("# ")), UNTITLED)


def body(md: str) -> str:
    """The Markdown as HTML; each table in a block of its own that scrolls sideways where the table is wider than
    the page (the error table has a column per variant and two of references)."""
    converted = markdown.markdown(md, extensions=EXTENSIONS, output_format="html")
    return converted.replace("<table>", '<div class="table">\n<table>').replace("</table>", "</table>\n</div>")


def footer(files: Sequence[str]) -> str:
    """Links to `files`, the report's files beside the page (report.md, the claims as data, ...); none: nothing."""
    if not files:
        return ""
    links = ", ".join(f'<a href="{escape(f)}">{escape(f)}</a>' for f in files)
    return f"<footer>\n<p>This report's files beside this page: {links}.</p>\n</footer>\n"


def page(md: str, files: Sequence[str] = ()) -> str:
    """index.html: the whole page for report.md's text `md`, linking at its foot to `files` (relative to the page).
    Every character past ASCII (±, Δ, ², ...) is written as a character reference, so the page reads the same
    whatever encoding the file is written in."""
    text = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title(md))}</title>
<style>{STYLE}</style>
</head>
<body>
{body(md)}
{footer(files)}</body>
</html>
"""
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")
