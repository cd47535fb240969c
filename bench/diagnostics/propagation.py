"""Signal propagation (Brock, De and Smith 2021, "Characterizing signal propagation to close the performance gap
in unnormalized ResNets", Fig. 1) and branches near zero (He et al. 2016, Sec. 4.2 and Fig. 7).

At the output of every block, over the probe's real images, three numbers per block (a signal propagation plot):
- the channel-averaged squared mean: the mean over channels of (the channel's mean over images and positions)^2;
- the average channel variance: the mean over channels of the channel's variance over images and positions;
- the residual branch's average channel variance, the same for f(x), the branch before the addition.

And per block with a skip, ||f(x)|| / ||s(x)||: the branch's size against the shortcut it is added to (the
identity, or the projection where shapes change), norms over the whole batch. A block that learns a residual
close to 0, as He et al. argue a residual block tends to, reads well below 1.

Where this deviates from Brock et al.: their nets are pre-activation ResNets, whose stream has no ReLU; the CIFAR
ResNets here put a ReLU after the addition (He et al. 2016), so the stream is non-negative, its squared mean is
not 0 even at initialisation, and a residual net without BN grows its variance by about 2.5 per block instead of
2 (the branch ends in a He-initialised conv, which doubles its input's second moment; the ReLU after the sum
keeps most of the 3x). A plain net's "branch" is its whole block before the ReLU, for comparison; it has no ratio.
Eval mode, as the other forward measures: at initialisation the caller calibrates BN on the probe first.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.diagnostics.batchnorm import mode


def channel_squared_mean(t: torch.Tensor) -> float:
    return t.double().mean(dim=(0, 2, 3)).pow(2).mean().item()


def channel_variance(t: torch.Tensor) -> float:
    return t.double().var(dim=(0, 2, 3), unbiased=False).mean().item()


@torch.no_grad()
def block_signals(model: nn.Module, x: torch.Tensor) -> dict:
    """The signal propagation plot's three lists and the branch ratios, one value per block (eval mode)."""
    seen: dict[int, dict] = {}

    def keep(i: int, what: str):
        def hook(module, args, out):
            seen.setdefault(i, {})[what] = out
            if what == "block":
                seen[i]["input"] = args[0]

        return hook

    hooks = []
    for i, b in enumerate(model.blocks):
        hooks.append(b.register_forward_hook(keep(i, "block")))
        hooks.append(b.branch_end.register_forward_hook(keep(i, "branch")))  # f(x), before the addition
        if b.skip:
            hooks.append(b.shortcut.register_forward_hook(keep(i, "shortcut")))
    try:
        with mode(model, False):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    blocks = [seen[i] for i in range(len(model.blocks))]
    return {
        "spp_squared_mean": [channel_squared_mean(s["block"]) for s in blocks],
        "spp_variance": [channel_variance(s["block"]) for s in blocks],
        "spp_branch_variance": [channel_variance(s["branch"]) for s in blocks],
        "spp_input_variance": [channel_variance(s["input"]) for s in blocks],
        "same_shape": [s["input"].shape == s["block"].shape for s in blocks],
        "branch_ratio_per_block": [norm_ratio(s["branch"], s["shortcut"]) if "shortcut" in s else None for s in blocks],
    }


def norm_ratio(f: torch.Tensor, s: torch.Tensor) -> float:
    """||f|| / ||s||; NaN where ||s|| is 0 (never inf from a 0/0)."""
    denominator = s.double().norm().item()
    return f.double().norm().item() / denominator if denominator > 0 else math.nan


def growth(signals: dict) -> float:
    """The stream's average channel variance growth per block: the geometric mean of output / input over the
    blocks that keep their shape (at a stage's first block width and resolution change, which is not depth).
    About 2.5 for a residual net without BN at initialisation, 1 for one whose branches are 0 (Fixup)."""
    logs = [
        math.log(out / inp)
        for out, inp, same in zip(signals["spp_variance"], signals["spp_input_variance"], signals["same_shape"])
        if same and out > 0 and inp > 0
    ]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def mean_branch_ratio(signals: dict) -> float | None:
    """The mean of ||f(x)|| / ||s(x)|| over the blocks with a skip; None for a plain net."""
    ratios = [r for r in signals["branch_ratio_per_block"] if r is not None and math.isfinite(r)]
    return sum(ratios) / len(ratios) if ratios else None
