"""Each image's predicted class under the final weights, on the test split and on the clean training split:
out/predictions.safetensors, beside the cell's metrics.json.

The report compares two cells on the same test images by a paired test, which needs every image's outcome, not
only the error rate. The training split is scored the same way, in eval mode and without augmentation: its error
is the training error of the final weights (the generalisation gap's training side), not the running, augmented,
train-mode average of the last epoch that history.csv logs.

safetensors: a plain header and the raw arrays, so the file's bytes repeat with the predictions (an .npz holds
the time it was written).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from bench.files import temporary
from bench.record import PREDICTIONS
from bench.train.data import Dataset, Split, normalise

SCORED = ("test", "train")  # the splits scored, each as "<split>/predicted" and "<split>/label"


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, mean, std, batch_size: int, context) -> np.ndarray:
    """The argmax class of every image of `split`, the model in eval mode (BN with its running statistics) under
    `context` (the Trainer's precision: autocast or nothing), in order; int16."""
    training = model.training
    model.eval()
    device = next(model.parameters()).device
    classes = []
    for i in range(0, len(split.y), batch_size):
        with context():
            logits = model(normalise(split.x[i : i + batch_size].to(device), mean, std))
        classes.append(logits.argmax(1).cpu())
    model.train(training)
    return torch.cat(classes).numpy().astype(np.int16)


def score(
    model: torch.nn.Module, data: Dataset, batch_size: int, context: type[AbstractContextManager]
) -> dict[str, np.ndarray]:
    """{"test/predicted", "test/label", "train/predicted", "train/label"} of the final weights."""
    arrays = {}
    for name in SCORED:
        split = getattr(data, name)
        arrays[f"{name}/predicted"] = predict(model, split, data.mean, data.std, batch_size, context)
        arrays[f"{name}/label"] = split.y.numpy().astype(np.int16)
    return arrays


def error(arrays: dict[str, np.ndarray], split: str) -> float | None:
    """The error rate of `split`'s predictions; None for an empty split."""
    predicted, label = arrays[f"{split}/predicted"], arrays[f"{split}/label"]
    return float(np.mean(predicted != label)) if len(label) else None


def write(out: Path, arrays: dict[str, np.ndarray] | None) -> None:
    """out/predictions.safetensors, replaced atomically. None (a diverged cell: its logits are not finite) writes
    empty arrays, so that no earlier run's predictions stay beside its results."""
    if arrays is None:
        arrays = {f"{s}/{kind}": np.zeros(0, np.int16) for s in SCORED for kind in ("predicted", "label")}
    tmp = temporary(out / PREDICTIONS)
    try:
        save_file(arrays, str(tmp))
        tmp.replace(out / PREDICTIONS)
    finally:
        tmp.unlink(missing_ok=True)
