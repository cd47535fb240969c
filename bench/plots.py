"""The figures' shared style: one colour and label per variant, one colour per depth, the log2 depth axis, and
one way to save a figure.

The report, its diagnostics section and the toy experiment draw with these, so a variant looks the same in
every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

STYLE = {
    "plain": ("tab:red", "plain"),
    "plain_bn": ("tab:orange", "plain + BN"),
    "residual": ("tab:blue", "residual"),
    "residual_bn": ("tab:green", "residual + BN"),
    "residual_fixup": ("tab:purple", "residual, Fixup init"),
    "residual_preact": ("tab:brown", "residual, pre-activation"),
}
DPI = 110


def style(variant: str) -> tuple[str | None, str]:
    """(colour, label) of a variant; a variant without a style gets matplotlib's next colour and its own name."""
    return STYLE.get(variant, (None, variant))


def depth_colours(depths: list[int]) -> dict:
    """depth -> colour, shallow to deep along viridis."""
    return dict(zip(depths, plt.cm.viridis([i / max(1, len(depths) - 1) for i in range(len(depths))])))


def depth_axis(ax, depths: list[int]) -> None:
    """log2 depth axis (the grid's depths roughly double) with a tick, labelled with the number, at each depth."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("depth (layers, log2 scale)")


def save(fig, path: Path) -> None:
    """Lay out, write and close `fig` (matplotlib keeps every open figure alive otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
