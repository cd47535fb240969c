"""The LightningModule: cross-entropy, SGD with momentum, an iteration-based lr schedule, torchmetrics.

It receives a model, its optimizer factory (`sgd`, the recipe, is defined here), its lr schedule and its
training forward, and names no architecture and no config. Error = 1 - accuracy, as He et al. report it.
A non-finite loss is recorded on the device (no host sync per step) and read by the Divergence callback,
which stops the run cleanly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from bench.models import build_model
from bench.record import SPLITS

EVAL_SPLITS = ("val", "test")  # the validation loop's two loaders, in order


def sgd(parameters, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.SGD:
    """SGD with momentum and weight decay (He et al. 2016, Sec. 4.2), through torch's fused kernel: one
    launch for every parameter, the same update. On a 2-core CPU it takes 0.29 ms a step for ResNet-20
    against 1.29 ms for the default per-tensor loop."""
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.SGD(
        parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=fused or None
    )


class Classifier(L.LightningModule):
    """`optimizer`: parameters -> torch optimizer; `lr_factor`: step -> lr multiplier (LambdaLR);
    `training_forward`: the network's forward for training steps, e.g. compiled (default: the network).

    `architecture` (bench.models.build_model's arguments) and `data` (classes, normalisation mean and
    std) are saved in the checkpoint, so that it describes itself: `Classifier.load_from_checkpoint(path)`
    rebuilds the network from them when no `model` is given, for inference (no optimizer needed)."""

    def __init__(
        self,
        model: nn.Module | None = None,
        num_classes: int = 0,
        optimizer: Callable[[Iterable], torch.optim.Optimizer] | None = None,
        lr_factor: Callable[[int], float] | None = None,
        training_forward: Callable | None = None,
        run_key: str = "",
        architecture: dict | None = None,
        data: dict | None = None,
    ):
        super().__init__()
        if model is None:
            if architecture is None:
                raise ValueError("Classifier needs a model, or the architecture that a bench checkpoint records")
            model = build_model(**architecture)
        self.model, self.make_optimizer, self.lr_factor = model, optimizer, lr_factor
        self._train_forward = training_forward or model.__call__  # a function: not in the state dict
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_factor", "training_forward"])
        # keyed "train_loss", "train_accuracy", ...: ModuleDict keys may not shadow Module.train.
        # No host sync per step: nan_strategy="disable" keeps a diverged loss NaN without checking for it,
        # validate_args=False skips the label checks (torch.unique) that would read the batch back
        self.metrics = nn.ModuleDict({f"{s}_loss": MeanMetric(nan_strategy="disable") for s in SPLITS})
        self.metrics.update(
            {f"{s}_accuracy": MulticlassAccuracy(num_classes, average="micro", validate_args=False) for s in SPLITS}
        )
        self.register_buffer("diverged_at", torch.tensor(-1), persistent=False)  # first non-finite step
        self._test_error = None
        self.epoch_updates = 0
        self.finished = False  # set once training ended: the final checkpoint says so (bench.train.resume)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        logits = self._train_forward(x) if split == "train" else self.model(x)
        loss = F.cross_entropy(logits, y)
        # one value per image, so a short last batch counts for its size: with nan_strategy="disable",
        # torchmetrics 1.9 drops `weight=` (Lightning-AI/torchmetrics#3434)
        self.metrics[f"{split}_loss"].update(loss.detach().expand(len(y)))
        self.metrics[f"{split}_accuracy"].update(logits.detach(), y)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        bad = ~torch.isfinite(loss.detach()) & (self.diverged_at < 0)
        self.diverged_at = torch.where(bad, self.global_step, self.diverged_at)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # self.log costs ~0.5 ms: only when read
            self.log(
                "train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=len(batch[1])
            )
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._step(batch, EVAL_SPLITS[dataloader_idx])

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_epoch(self, splits) -> None:
        for s in splits:
            loss, accuracy = self.metrics[f"{s}_loss"], self.metrics[f"{s}_accuracy"]
            if accuracy.update_count == 0:
                continue  # e.g. an empty validation split
            self.log(f"{s}/loss", loss.compute(), prog_bar=s != "test")
            self.log(f"{s}/error", 1 - accuracy.compute(), prog_bar=s != "test")
            loss.reset()
            accuracy.reset()

    def on_train_epoch_end(self):
        self.epoch_updates = int(self.metrics["train_accuracy"].update_count)  # batches this process counted
        train_error = 1 - self.metrics["train_accuracy"].compute()
        self._log_epoch(["train"])
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        if self._test_error is not None:  # the generalisation gap, from this epoch's validation loop
            self.log("gap", self._test_error - train_error)

    def on_validation_epoch_start(self):
        self._test_error = None

    def on_validation_epoch_end(self):
        if self.metrics["test_accuracy"].update_count:
            self._test_error = 1 - self.metrics["test_accuracy"].compute()
        self._log_epoch(EVAL_SPLITS)

    def on_test_epoch_end(self):
        self._log_epoch(["test"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["finished"] = self.finished  # an epoch's checkpoint: False; the final weights': True

    def configure_optimizers(self):
        opt = self.make_optimizer(self.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
