"""Train one cell of the ablation grid, (variant, depth, seed), and write its results to one folder.

`train(params, variant, depth, seed, out)` is a pure function the CLI and the tests call. It writes
out/metrics.json (final train/val/test error and loss, steps, wall time, images/s, divergence),
out/history.csv (one row per epoch), out/diagnostics.json (per-block diagnostics), out/env.json (versions, hardware, git commit, data checksum) and
out/last.ckpt (Lightning's ModelCheckpoint).
"""
from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from bench import config, models, provenance, resume, speed, tracking
from bench.files import write_json
from bench.grid import cell_name
from bench.callbacks import Diagnostics, Divergence, HistoryLogger, Throughput
from bench.config import Params
from bench.data import DataModule, Dataset, load_prepared, local_batch_size, normalise
from bench.module import Classifier
from bench.schedule import lr_factor


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None  # JSON has no NaN: a diverged loss is recorded as null


def last_checkpoint(out: Path) -> ModelCheckpoint:
    """out/last.ckpt after every epoch (no monitor: the latest is the one kept), replaced atomically."""
    return ModelCheckpoint(dirpath=out, filename="last", every_n_epochs=1, enable_version_counter=False)


def build(params: Params, variant: str, depth: int, seed: int, data: Dataset, run_key: str = ""
          ) -> tuple[Classifier, DataModule]:
    """The LightningModule and DataModule of one cell; the same for `bench train` and `bench perf`."""
    L.seed_everything(seed, workers=True, verbose=False)  # the initial weights depend on the seed only
    model = models.build_model(variant, depth, params.model.shortcut, len(data.classes), data.shape[0])
    t = params.train
    module = Classifier(model, len(data.classes), t.lr, t.momentum, t.weight_decay, t.nesterov,
                        partial(lr_factor, cfg=t, depth=depth), params.speed, run_key=run_key)
    return module, DataModule(data, t.batch_size, t.augment, seed, params.speed)


def trainer_flags(params: Params, train_images: int) -> dict:
    """params.yaml's `trainer` section and the step budget as L.Trainer arguments."""
    tr, t = params.trainer, params.train
    steps_per_epoch = max(1, train_images // t.batch_size)
    return dict(
        accelerator=tr.accelerator, devices=tr.devices, num_nodes=tr.num_nodes, strategy=tr.strategy,
        sync_batchnorm=tr.sync_batchnorm, precision=tr.precision, deterministic=tr.deterministic,
        max_steps=t.max_steps, max_epochs=math.ceil(t.max_steps / steps_per_epoch) + 1,  # +1: a resumed epoch may repeat
        log_every_n_steps=tr.log_every_n_steps, check_val_every_n_epoch=tr.check_val_every_n_epoch,
        enable_model_summary=False,
    )


class TrainingBar(TQDMProgressBar):
    """Lightning's bar without its per-epoch validation and sanity-check bars: evaluating the two small
    splits takes a moment, and each of those bars is several lines of a log per epoch (dvc repro's)."""

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        if self.trainer.state.fn == "validate":  # `trainer.validate` alone: its own bar
            return super().init_validation_tqdm()
        return Tqdm(disable=True)


def progress_bar(params: Params, progress: bool) -> list:
    """The training bar, redrawn every log_every_n_steps: each redraw reads the loss back from the GPU."""
    return [TrainingBar(refresh_rate=params.trainer.log_every_n_steps)] if progress else []


def check(params: Params, variant: str, depth: int) -> None:
    """Raise ValueError on a bad cell or `speed` param, before any work."""
    models.check(variant, depth, params.model.shortcut)
    speed.check(params.speed)


def train(params: Params, variant: str, depth: int, seed: int, out: str | os.PathLike,
          data_dir: str | os.PathLike = "data/prepared", progress: bool = True) -> dict:
    check(params, variant, depth)  # fail before any work
    tracking.mode(params)
    out = Path(out)
    data = load_prepared(data_dir, params.data)
    t = params.train
    if len(data.train.y) < t.batch_size:
        raise ValueError(f"train.batch_size={t.batch_size} exceeds the {len(data.train.y)} training images")
    key = resume.run_key(params, variant, depth, seed, data.md5)
    ckpt_path, message = resume.checkpoint_to_resume(out, key)
    resuming = message is not None and message.startswith("resuming")
    if message:
        rank_zero_info(f"{cell_name(variant, depth, seed)}: {message}")
    module, dm = build(params, variant, depth, seed, data, run_key=key)
    model = module.model
    divergence, throughput = Divergence(params.trainer.log_every_n_steps), Throughput()
    n = params.diagnostics.probe_size
    probe = Diagnostics(normalise(data.test.x[:n], data.mean, data.std), data.test.y[:n], params.diagnostics.every)
    history = HistoryLogger(out / "history.csv", resume=resuming)
    env = provenance.environment()
    run_config = {**config.to_dict(params), "cell": {"variant": variant, "depth": depth, "seed": seed},
                  "data_md5": data.md5, **env}
    wandb = tracking.logger(params, variant, depth, seed, data.name, run_config,
                            run_id=resume.wandb_run_id(out, resuming) if rank_zero_only.rank == 0 else None)
    trainer = L.Trainer(
        **trainer_flags(params, len(data.train.y)), logger=[history] + ([wandb] if wandb else []),
        callbacks=[divergence, throughput, probe, last_checkpoint(out), *progress_bar(params, progress)],
        enable_progress_bar=progress, default_root_dir=out,
    )
    local_batch_size(t.batch_size, trainer.world_size)  # fail before training if the batch does not divide
    if wandb:
        wandb.log_hyperparams({"world_size": trainer.world_size, "precision": str(trainer.precision)})
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_metrics = dict(trainer.callback_metrics)
    last_row = history.rows[max(history.rows)] if history.rows else {}
    trainer.loggers = []  # the final test repeats the last epoch's test/* in history.csv; keep it out
    test_metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    metrics = {
        "variant": variant, "depth": depth, "seed": seed, "dataset": data.name, "data_md5": data.md5,
        "params": sum(p.numel() for p in model.parameters()),
        # a resumed run that had no step left logs nothing: its last epoch's row in history.csv has them
        **{k: _finite(fit_metrics[k]) if k in fit_metrics else last_row.get(k)
           for k in ("train/loss", "train/error", "val/loss", "val/error")},
        "test/loss": _finite(test_metrics["test/loss"]),
        "test/error": _finite(test_metrics["test/error"]),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "images_per_s": _finite(round(throughput.images_per_s, 1)),  # null when a resumed run had no step left
        "diverged": divergence.step is not None,
        "diverged_step": divergence.step,
        **{k: _finite(v) if v is not None else None for k, v in probe.scalars().items()},
    }
    if trainer.is_global_zero:
        history.save()
        write_json(out / "diagnostics.json", probe.results)
        if wandb:
            tracking.log_diagnostics(wandb.experiment, probe.results)
            wandb.experiment.summary.update(metrics)
            wandb.experiment.finish()
        env.update(cell=cell_name(variant, depth, seed), data_md5=data.md5, world_size=trainer.world_size,
                   precision=str(trainer.precision))
        write_json(out / "env.json", env)
        write_json(out / "metrics.json", metrics)
    return metrics
