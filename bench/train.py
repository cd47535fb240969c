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
from lightning.pytorch.callbacks import ModelCheckpoint

from bench import config, models, provenance, tracking
from bench.files import write_json
from bench.grid import cell_name
from bench.callbacks import Diagnostics, Divergence, HistoryLogger, Throughput
from bench.config import Params
from bench.data import DataModule, load_prepared, normalise
from bench.module import Classifier
from bench.schedule import lr_factor


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None  # JSON has no NaN: a diverged loss is recorded as null


def train(params: Params, variant: str, depth: int, seed: int, out: str | os.PathLike,
          data_dir: str | os.PathLike = "data/prepared", progress: bool = True) -> dict:
    models.check(variant, depth, params.model.shortcut)  # fail before any work
    tracking.mode(params)
    out = Path(out)
    L.seed_everything(seed, workers=True, verbose=False)
    data = load_prepared(data_dir, params.data)
    if len(data.train.y) < params.train.batch_size:
        raise ValueError(f"train.batch_size={params.train.batch_size} exceeds the {len(data.train.y)} training images")
    model = models.build_model(variant, depth, params.model.shortcut, len(data.classes), data.shape[0])
    t = params.train
    module = Classifier(model, len(data.classes), t.lr, t.momentum, t.weight_decay, t.nesterov,
                        partial(lr_factor, cfg=t, depth=depth))
    divergence, throughput = Divergence(params.trainer.log_every_n_steps), Throughput()
    n = params.diagnostics.probe_size
    probe = Diagnostics(normalise(data.test.x[:n], data.mean, data.std), data.test.y[:n], params.diagnostics.every)
    history = HistoryLogger(out / "history.csv")
    env = provenance.environment()
    run_config = {**config.to_dict(params), "cell": {"variant": variant, "depth": depth, "seed": seed},
                  "data_md5": data.md5, **env}
    wandb = tracking.logger(params, variant, depth, seed, data.name, run_config)
    tr = params.trainer
    steps_per_epoch = max(1, len(data.train.y) // t.batch_size)
    trainer = L.Trainer(
        accelerator=tr.accelerator, devices=tr.devices, num_nodes=tr.num_nodes, strategy=tr.strategy,
        sync_batchnorm=tr.sync_batchnorm, precision=tr.precision, deterministic=tr.deterministic,
        max_steps=t.max_steps, max_epochs=math.ceil(t.max_steps / steps_per_epoch), log_every_n_steps=tr.log_every_n_steps,
        check_val_every_n_epoch=tr.check_val_every_n_epoch, logger=[history] + ([wandb] if wandb else []),
        callbacks=[divergence, throughput, probe, ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0)],
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=out,
    )
    if wandb:
        wandb.log_hyperparams({"world_size": trainer.world_size, "precision": str(trainer.precision)})
    dm = DataModule(data, t.batch_size, params.train.augment, seed)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_metrics = dict(trainer.callback_metrics)
    trainer.loggers = []  # the final test repeats the last epoch's test/* in history.csv; keep it out
    test_metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    metrics = {
        "variant": variant, "depth": depth, "seed": seed, "dataset": data.name, "data_md5": data.md5,
        "params": sum(p.numel() for p in model.parameters()),
        **{k: _finite(fit_metrics[k]) if k in fit_metrics else None
           for k in ("train/loss", "train/error", "val/loss", "val/error")},
        "test/loss": _finite(test_metrics["test/loss"]),
        "test/error": _finite(test_metrics["test/error"]),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "images_per_s": round(throughput.images_per_s, 1),
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
