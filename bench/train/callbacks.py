"""Lightning callbacks and a logger for one run: divergence, throughput, the diagnostics on the probe, and the
per-epoch history CSV."""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.logger import Logger

from bench.diagnostics import probe
from bench.diagnostics.batchnorm import calibrate_bn
from bench.files import atomic
from bench.record import TEST_ERROR, TEST_LOSS, TRAIN_ERROR, TRAIN_LOSS, VAL_ERROR, VAL_LOSS
from bench.train.distributed import is_rank_zero
from bench.train.speed import sync

HISTORY_KEYS = ("epoch", "step", "lr", TRAIN_LOSS, TRAIN_ERROR, VAL_LOSS, VAL_ERROR, TEST_LOSS, TEST_ERROR)
EPOCH_KEYS = ("lr", TRAIN_LOSS, TRAIN_ERROR)  # logged at a training epoch's end (the others by its validation)
PARTIAL_KEYS = (TRAIN_LOSS, TRAIN_ERROR)  # running means over the epoch's batches: blank where some are missing


class Divergence(L.Callback):
    """Stops a run whose loss became non-finite, and keeps the step where it happened.

    The module records the first bad step on the device; reading it costs a host sync, so it is read
    every `every` steps and at each epoch end, not every step.
    """

    def __init__(self, every: int = 10):
        self.every, self.step = every, None

    def _check(self, trainer, module) -> None:
        if self.step is None and (at := int(module.diverged_at)) >= 0:
            self.step = at
            trainer.should_stop = True
            if is_rank_zero():
                print(
                    f"Loss became non-finite at step {at}: the run diverged. Stopping it; this is a result.",
                    flush=True,
                )

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if (trainer.global_step % self.every == 0) or trainer.global_step >= trainer.max_steps:
            self._check(trainer, module)

    def on_train_epoch_end(self, trainer, module):
        self._check(trainer, module)

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


class Throughput(L.Callback):
    """Training images per second: images over wall time in the training loop, evaluation excluded.

    The first `warmup` steps of a run are left out: compilation, CUDA-graph capture and cuDNN's
    autotuning happen there, and would otherwise dominate a short run's figure.
    """

    def __init__(self, warmup: int = 5):
        self.warmup, self.images, self.seconds, self._t = warmup, 0, 0.0, None

    def _start(self, trainer, module):
        if self._t is None and trainer.global_step >= self.warmup:
            sync(module.device)
            self._t = time.perf_counter()

    def on_train_epoch_start(self, trainer, module):
        self._start(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._t is None:
            self._start(trainer, module)  # the warm-up ends with this step
        else:
            self.images += len(batch[1]) * trainer.world_size

    def _stop(self, module):
        if self._t is not None:
            sync(module.device)
            self.seconds += time.perf_counter() - self._t
            self._t = None

    def on_validation_start(self, trainer, module):
        self._stop(module)

    def on_validation_end(self, trainer, module):
        if trainer.training:
            self._start(trainer, module)

    def on_train_epoch_end(self, trainer, module):
        self._stop(module)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")

    def state_dict(self):  # a resumed run's figure covers its steps before the checkpoint too
        return {"images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state):
        self.images, self.seconds = state["images"], state["seconds"]


class HistoryLogger(Logger):
    """One CSV row per epoch (the keys in HISTORY_KEYS), merged from Lightning's epoch-level logs.

    Rewritten atomically after every epoch, so a crash never leaves a half-written file; a resumed
    run starts from the rows already written (the epochs after its checkpoint are then redone).
    Lightning calls `save()` after every `log_metrics`, step-level ones included: the file is
    rewritten only when an epoch's row has changed since the last write, and only by rank 0.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.rows: dict[int, dict] = {}
        self.partial: set[int] = set()  # epochs whose training loss and error are not the whole epoch's
        self._dirty = False

    def load(self) -> None:
        """The rows already written, for a resumed run (the epochs after its checkpoint are then redone)."""
        if not self.path.exists():
            return
        try:
            with open(self.path) as f:
                for r in csv.DictReader(f):
                    self.rows[int(r["epoch"])] = {
                        k: (float(v) if k not in ("epoch", "step") else int(v)) for k, v in r.items() if v != ""
                    }
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{self.path} cannot be read to resume ({type(e).__name__}: {e}); move it aside "
                f"to start its history afresh"
            ) from None

    @property
    def name(self):
        return "history"

    @property
    def version(self):
        return ""  # nothing to version, and "" keeps "v_num" off the progress bar

    @property
    def experiment(self):
        return None

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if "epoch" not in metrics or not any(k in metrics for k in HISTORY_KEYS[2:]):
            return
        epoch = int(metrics["epoch"])
        row = self.rows.setdefault(epoch, {"epoch": epoch})
        kept = HISTORY_KEYS[2:] if epoch not in self.partial else set(HISTORY_KEYS[2:]) - set(PARTIAL_KEYS)
        row.update({k: float(v) for k, v in metrics.items() if k in kept})
        self._dirty = True

    def end_epoch(self, epoch: int, step: int, logged: dict, partial: bool = False) -> None:
        """Training epoch `epoch` ended at global step `step`, having logged `logged` (EPOCH_KEYS): its row, saved.
        A `partial` epoch's training loss and error cover only some of its batches: they are left blank."""
        row = self.rows.setdefault(epoch, {"epoch": epoch})
        row.update(step=step, **{k: float(v) for k, v in logged.items()})
        if partial:
            self.partial.add(epoch)
            for k in PARTIAL_KEYS:
                row.pop(k, None)
        self._dirty = True
        self.save()

    def save(self) -> None:
        if not self._dirty or not is_rank_zero():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic(self.path, newline="") as f:
            w = csv.DictWriter(f, HISTORY_KEYS)
            w.writeheader()
            for e in sorted(self.rows):
                w.writerow({k: _fmt(self.rows[e].get(k)) for k in HISTORY_KEYS})
        self._dirty = False

    def finalize(self, status: str) -> None:
        self.save()


class EpochCheckpoint(ModelCheckpoint):
    """out/last.ckpt at the end of every training epoch, written after the epoch's history row is complete and
    saved: a kill leaves the row and its checkpoint, or the row alone (the resumed run redoes that epoch and
    rewrites it), never a checkpoint whose epoch has no row. Lightning calls checkpoint callbacks after the
    module's on_train_epoch_end, where the epoch's training loss, error and lr are logged.

    The row's step is the global step here, not the one Lightning passes its loggers: after a resume that one
    is off by one (31, 41, ... instead of 30, 40, ...)."""

    def __init__(self, out: Path, history: HistoryLogger):
        super().__init__(
            dirpath=out, filename="last", every_n_epochs=1, enable_version_counter=False, save_on_train_epoch_end=True
        )
        self.history = history

    def on_train_epoch_end(self, trainer, module):
        logged, epoch = trainer.callback_metrics, trainer.current_epoch
        # an epoch resumed mid-way (a SLURM requeue) counted only its batches after the requeue
        partial = module.epoch_updates < trainer.global_step - self.history.rows.get(epoch - 1, {}).get("step", 0)
        self.history.end_epoch(epoch, trainer.global_step, {k: logged[k] for k in EPOCH_KEYS if k in logged}, partial)
        super().on_train_epoch_end(trainer, module)


def _fmt(v):
    if v is None:
        return ""
    return "nan" if isinstance(v, float) and not math.isfinite(v) else v


class DiagnosticsCallback(L.Callback):
    """The pathology diagnostics (bench.diagnostics.probe.diagnose) on a fixed probe batch: at initialisation,
    every `every` epochs (0: never), and at the end of training; results in `self.results[when]`, beside
    `self.results["probe"]`, which records the probe's images.

    At initialisation BN's running statistics are still (0, 1), so a copy of the model is measured
    with its BN calibrated on the probe (batchnorm.calibrate_bn). Every rank measures (SyncBatchNorm
    may communicate); only rank 0 writes.
    """

    def __init__(
        self,
        probe_x: torch.Tensor,
        probe_y: torch.Tensor,
        num_classes: int,
        pairs: int,
        points: int,
        every: int = 0,
        record: dict | None = None,
    ):
        self.probe, self.every = (probe_x, probe_y), every
        self.settings = dict(num_classes=num_classes, pairs=pairs, points=points)
        self.results = {"probe": record or {}}

    def probe_diagnostics(self, model, device, init: bool = False) -> dict:
        """Every diagnostic of `model` on the probe; at initialisation, of a copy with its BN calibrated on
        the probe, and without lesions (an untrained net is at chance)."""
        x, y = (t.to(device) for t in self.probe)
        if init:
            model = calibrate_bn(copy.deepcopy(model), x)
        return probe.diagnose(model, x, y, **self.settings, lesions=not init)

    def _record(self, module, when: str, init: bool = False) -> None:
        self.results[when] = self.probe_diagnostics(module.model, module.device, init)

    def on_fit_start(self, trainer, module):
        if not trainer.ckpt_path:  # a resumed run was measured at its real initialisation already
            self._record(module, "init", init=True)

    def on_train_epoch_end(self, trainer, module):
        if self.every and (trainer.current_epoch + 1) % self.every == 0:
            self._record(module, f"epoch_{trainer.current_epoch + 1}")

    def on_fit_end(self, trainer, module):
        if int(module.diverged_at) < 0:  # a diverged net's weights are not finite: nothing to measure
            self._record(module, "end")

    def scalars(self) -> dict:
        """{'init/shattering': ..., 'end/grad_ratio': ..., ...} for metrics.json and the W&B summary."""
        return {
            f"{when}/{k}": r[k] for when, r in self.results.items() if when in ("init", "end") for k in probe.SCALARS
        }

    def state_dict(self):
        return {"results": self.results}

    def load_state_dict(self, state):
        self.results = {**state["results"], "probe": self.results["probe"]}
