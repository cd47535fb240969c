"""Path lengths in the report (bench/paths/ measures them in a stage of their own): the section, a table of the
band of path lengths that carries the gradient, the stage's figure, and the claim of Veit et al. 2016 (Sec. 6)
that the gradient of a deep residual net comes from paths much shorter than the net."""

from __future__ import annotations

from bench.report import markdown
from bench.report.contrast import mean_interval
from bench.report.verdict import claim, decide

FILE, FIGURE = "paths.json", "paths.png"
VARIANT = "residual_bn"  # the claim's net: He et al.'s ResNet, as in the paper


def mean_length(r: dict) -> float:
    """The path length k averaged with the total gradient that paths of length k carry."""
    return sum(k * t for k, t in zip(r["k"], r["total"])) / sum(r["total"])


def measured(summary: dict, variant: str, depth: int) -> list[dict]:
    return [
        r for r in summary["cells"].values() if (r["variant"], r["depth"]) == (variant, depth) and not r["diverged"]
    ]


def table(summary: dict, variants: list[str], depths: list[int]) -> str:
    """The band of each cell (seeds apart) and the gradient-weighted mean path length against n / 2."""
    rows = []
    for v in variants:
        cells = []
        for d in depths:
            rs = measured(summary, v, d)
            if not rs:
                cells.append("-")
                continue
            bands = ", ".join(f"{r['band'][0]}-{r['band'][1]}" for r in rs)
            mean = sum(map(mean_length, rs)) / len(rs)
            cells.append(f"{bands} of {rs[0]['blocks']} (mean {mean:.1f}, n/2 = {rs[0]['blocks'] / 2:g})")
        rows.append([v, *cells])
    return markdown.table(["variant", *(f"depth {d}" for d in depths)], rows)


def section(summary: dict | None, folder: str, variants: list[str], depths: list[int]) -> str:
    if summary is None:
        return ""
    p = summary["params"]
    shown = [v for v in variants if any(r["variant"] == v for r in summary["cells"].values())]
    return f"""### Path lengths

`bench/paths/`, after Veit, Wilber and Belongie 2016 (Fig. 6): one forward pass of {p["subset"]} fixed training
images in eval mode; in the backward pass the gradient goes through the residual branch of k randomly chosen
blocks and through the skip alone in the others ({p["samples"]} random sets per k), and its norm at the input is
the gradient of one path of length k. Times the number of such paths, C(n, k), it is the total gradient that paths
of length k carry. The band holds the central {p["mass"]:.0%} of that total (the paper: 5 to 17 of 54 blocks in
ResNet-110); its mean is set against n / 2, the mean length of all paths.

{table(summary, shown, depths)}{"".join(f"{chr(10) * 2}Not measured: {why}." for why in summary["not_measured"])}

![path lengths]({folder}/{FIGURE})
"""


def claims(summary: dict | None, deep: int) -> list[dict]:
    """Veit et al.: the gradient of a deep residual net comes from paths shorter than the typical path."""
    c = claim(
        "paths/short",
        "residual connections",
        f"at depth {deep}, {VARIANT}'s gradient is carried by paths shorter than its typical path (the "
        f"gradient-weighted mean path length is below n / 2; Veit et al. 2016)",
        [f"{VARIANT}-{deep}"],
        "mean over seeds of n / 2 - the gradient-weighted mean path length, t with n - 1 df",
        "blocks",
    )
    if summary is None:
        return [decide(c, None, {}, "the paths stage did not run")]
    rs = measured(summary, VARIANT, deep)
    n = {f"{VARIANT}-{deep}": len(rs)}
    why = None if len(rs) >= 2 else "fewer than 2 seeds measured (paths.seeds), or the net diverged"
    return [decide(c, None if why else mean_interval([r["blocks"] / 2 - mean_length(r) for r in rs]), n, why)]
