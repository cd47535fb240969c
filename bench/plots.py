"""The figures' shared style: one colour and label per variant, one way to save a figure.

The report, its diagnostics section and the toy experiment draw with these, so a variant looks the
same in every figure.
"""

from __future__ import annotations

from pathlib import Path

STYLE = {
    "plain": ("tab:red", "plain"),
    "plain_bn": ("tab:orange", "plain + BN"),
    "residual": ("tab:blue", "residual"),
    "residual_bn": ("tab:green", "residual + BN"),
    "residual_fixup": ("tab:purple", "residual, Fixup init"),
}
DPI = 110


def save(fig, path: Path) -> None:
    """Lay out, write and close `fig` (matplotlib keeps every open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
