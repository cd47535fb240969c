"""`bench toy`: Balduzzi et al. 2017's toy setting, the reference for shattered gradients.

Scalar input, 256 points on [-2, 2], fully connected width 200, He init, BN: the lag-1 correlation of
dy/dx along the line vs depth, plain vs residual. The paper: plain nets decay like 2^-L (white noise),
residual nets like 1/sqrt(L) (brown noise).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from bench.config import Toy
from bench.diagnostics import shattering_score, toy_shattering
from bench.files import write_json


def run(cfg: Toy) -> dict:
    """{'plain': {depth: [score per seed]}, 'residual': {...}}."""
    return {family: {d: [shattering_score(toy_shattering(d, family == "residual", cfg.width, cfg.points, seed))
                         for seed in range(cfg.seeds)] for d in cfg.depths}
            for family in ("plain", "residual")}


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family, colour in (("plain", "tab:red"), ("residual", "tab:green")):
        depths = sorted(results[family])
        means = [statistics.fmean(results[family][d]) for d in depths]
        stds = [statistics.stdev(results[family][d]) if len(results[family][d]) > 1 else 0 for d in depths]
        ax.errorbar(depths, means, yerr=stds, marker="o", capsize=3, color=colour, label=f"{family} (BN)")
    depths = sorted(results["plain"])
    ax.plot(depths, [2.0 ** -d for d in depths], ":", color="tab:red", label="$2^{-L}$ (paper, plain)")
    ax.plot(depths, [d ** -0.5 for d in depths], ":", color="tab:green", label=r"$1/\sqrt{L}$ (paper, residual)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("depth L (fully connected layers)")
    ax.set_ylabel("lag-1 correlation of dy/dx")
    ax.set_title("Shattered gradients, Balduzzi et al. 2017 toy setting")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def toy(cfg: Toy, out: str | Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(cfg)
    write_json(out / "toy.json", {f: {str(d): v for d, v in r.items()} for f, r in results.items()})
    plot(results, out / "toy_shattering.png")
    return results
