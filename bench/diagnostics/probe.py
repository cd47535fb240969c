"""The probe: a fixed, class-stratified batch of test images on which every cell's diagnostics are measured.

`indices` picks it, the same images for every cell of a dataset; `diagnose` runs every measure of this
package on it (signals, shattering, lesions, batchnorm: one paper each) and returns one JSON-ready record.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.diagnostics import batchnorm, propagation, shattering, signals
from bench.diagnostics.lesions import lesion_errors
from bench.record import chance_error, finite

SCALARS = (  # the diagnostics that go into metrics.json as init/... and end/...
    "grad_ratio",
    "grad_saturated",
    "shattering",
    "shattering_std",
    "shattering_lag1",
    "variance_growth",
    "intact_error",
    "lesion_at_chance",
    "lesion_mean_increase",
    "lesion_max_increase",
    "lesion_downsampling_increase",
    "bn_scale_change",
    "bn_train_mode_error",
    "bn_eval_mode_error",
    "bn_fold_difference",
    "spp_growth",
    "branch_ratio",
)


def indices(labels: torch.Tensor, size: int, seed: int) -> list[int]:
    """`size` indices into `labels`, stratified by class: each class shuffled with `seed`, then the
    classes taken in turn (0, 1, ..., 0, 1, ...), so that class counts differ by at most one while
    every class lasts, and any two neighbours are of different classes (the shattering pairs).

    The first N test images would not do: a dataset stored in class order makes that a single class,
    on which a confident net's loss, and so every gradient, can be exactly 0.
    """
    g = torch.Generator().manual_seed(seed)
    per_class = [(labels == c).nonzero().flatten() for c in labels.unique(sorted=True)]
    queues = [members[torch.randperm(len(members), generator=g)].tolist() for members in per_class]
    picked = []
    while len(picked) < min(size, len(labels)):
        picked += [q.pop(0) for q in queues if q][: size - len(picked)]
    return picked


def _json(v):
    """NaN and inf as null (JSON has neither), through lists and dicts; other values as they are."""
    if isinstance(v, float):
        return finite(v)
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


def diagnose(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, pairs: int, points: int, lesions: bool = True
) -> dict:
    """Every diagnostic on the probe batch (x: (N, C, H, W) normalised, y: (N,)): the scalar summaries of
    SCALARS and the per-block and per-layer lists, JSON-ready (NaN as null). `lesions=False` skips the
    lesions (one evaluation of the probe per block), which say nothing about an untrained net: null."""
    grads = signals.block_gradients(model, x, y)
    shatter = shattering.shattering(model, x, y, pairs, points)
    variance = signals.forward_variance(model, x)
    lesion = (
        lesion_errors(model, x, y, chance=chance_error(num_classes))
        if lesions
        else dict.fromkeys(
            (
                "intact",
                "per_block",
                "downsampling",
                "at_chance",
                "mean_increase",
                "max_increase",
                "downsampling_mean_increase",
            )
        )
    )
    bn = batchnorm.train_vs_eval_error(model, x, y)
    spp = propagation.block_signals(model, x)
    return _json(
        {
            **spp,
            "spp_growth": propagation.growth(spp),
            "branch_ratio": propagation.mean_branch_ratio(spp),
            "bn_fold_difference": batchnorm.fold_difference(model, x),
            "grad_ratio": grads["ratio"],
            "grad_saturated": grads["saturated"],
            "activation_grad_rms": grads["activation_rms"],
            "relative_weight_grad": grads["relative_weight"],
            "shattering": shatter["correlation"],
            "shattering_std": shatter["correlation_std"],
            "shattering_pairs": shatter["correlation_pairs"],
            "shattering_lag1": shatter["lag1"],
            "shattering_by_distance": shatter["by_distance"],
            "response_std": signals.response_stds(model, x),
            "bn_scale_change": batchnorm.bn_scale_change(model),
            "forward_variance": variance,
            "variance_growth": signals.ratio(variance[-1], variance[0]) ** (1 / max(1, len(variance) - 1)),
            "intact_error": lesion["intact"],
            "lesion_error": lesion["per_block"],
            "lesion_downsampling": lesion["downsampling"],
            "lesion_at_chance": lesion["at_chance"],
            "lesion_mean_increase": lesion["mean_increase"],
            "lesion_max_increase": lesion["max_increase"],
            "lesion_downsampling_increase": lesion["downsampling_mean_increase"],
            "bn_train_mode_error": bn["train_mode"],
            "bn_eval_mode_error": bn["eval_mode"],
        }
    )
