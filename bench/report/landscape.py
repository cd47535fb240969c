"""Loss landscapes in the report (bench/landscape/ draws them in a stage of their own): the section, linking the
stage's figure, and the claim of Li et al. 2018 (Sec. 6) that without skips the surface turns non-convex as depth
grows, computed over seeds from each cell's non-convex fraction."""

from __future__ import annotations

from bench.report import markdown
from bench.report.contrast import difference_interval
from bench.report.verdict import claim, decide

FILE, FIGURE = "landscape.json", "landscape.png"


def fractions(summary: dict, variant: str, depth: int) -> list[float]:
    """The non-convex fraction of each drawn seed of a cell (a diverged or blown-up seed has none)."""
    found = []
    for r in summary["cells"].values():
        if (r["variant"], r["depth"]) == (variant, depth) and (x := r.get("nonconvex_fraction")) is not None:
            found.append(x)
    return found


def table(summary: dict, variants: list[str], depths: list[int]) -> str:
    """Non-convex fraction per variant and depth, mean over the drawn seeds."""
    rows = []
    for v in variants:
        cells = []
        for d in depths:
            xs = fractions(summary, v, d)
            cells.append(f"{sum(xs) / len(xs):.2f} (n = {len(xs)})" if xs else "-")
        rows.append([v, *cells])
    return markdown.table(["variant", *(f"depth {d}" for d in depths)], rows)


def section(summary: dict | None, folder: str, variants: list[str], depths: list[int]) -> str:
    if summary is None:
        return ""
    p = summary["params"]
    drawn = [v for v in variants if any(r["variant"] == v for r in summary["cells"].values())]
    return f"""### Loss landscapes

`bench/landscape/`, after Li, Xu, Taylor, Studer and Goldstein 2018 (Fig. 5): the training loss of each trained
cell along two random directions normalised filter by filter (biases and BN's parameters not moved), on
{p["subset"]} fixed training images without augmentation, BN in eval mode, at {p["resolution"]} points per axis
over [-{p["span"]}, {p["span"]}]. The non-convex fraction is the share of the plane's interior points whose 2x2
Hessian (central differences) has lambda_min < -{p["ratio"]} |lambda_max|: the paper's measure read on the plane
rather than from the full Hessian, so it can only miss negative curvature, never invent it.

{table(summary, drawn, depths)}{"".join(f"{chr(10) * 2}Not drawn: {why}." for why in summary["not_drawn"])}

![loss landscapes]({folder}/{FIGURE})
"""


def claims(summary: dict | None, deep: int) -> list[dict]:
    """Li et al.: without skips the surface is less convex at depth than with them."""
    c = claim(
        "landscape/skips",
        "residual connections",
        f"at depth {deep}, plain_bn's loss surface is less convex than residual_bn's (its non-convex fraction is "
        f"larger; Li et al. 2018)",
        [f"plain_bn-{deep}", f"residual_bn-{deep}"],
        "difference of means over seeds of the non-convex fraction, Welch's t",
        "fraction",
    )
    if summary is None:
        return [decide(c, None, {}, "the landscape stage did not run")]
    a, b = fractions(summary, "plain_bn", deep), fractions(summary, "residual_bn", deep)
    n = {f"plain_bn-{deep}": len(a), f"residual_bn-{deep}": len(b)}
    why = None if min(len(a), len(b)) >= 2 else "fewer than 2 seeds drawn per cell (landscape.seeds)"
    return [decide(c, None if why else difference_interval(a, b), n, why)]
