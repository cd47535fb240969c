"""Train one cell of the ablation grid, (variant, depth, seed), and write its results to one folder.

`train(params, cell, out)` is a pure function the CLI and the tests call. It reads top to bottom:
check, build, fit, evaluate, record. It writes out/metrics.json (bench.record), out/history.csv (one
row per epoch), out/diagnostics.json (per-block diagnostics), out/env.json (versions, hardware, git
commit, data checksum), out/predictions.safetensors (each image's predicted class; none for a diverged run),
out/weights.safetensors (the final weights: bench.weights) and out/last.ckpt (Lightning's, for resuming).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from bench import models, provenance, quiet, record, tracking, validate, weights
from bench.config import Params
from bench.diagnostics.probe import indices as probe_indices
from bench.files import locked, remove_stale, write_json
from bench.record import Cell
from bench.run_key import run_key
from bench.train import predictions, resume, settings, speed
from bench.train.callbacks import DiagnosticsCallback, Divergence, EpochCheckpoint, HistoryLogger, Throughput
from bench.train.data import Dataset, load_prepared, normalise
from bench.train.datamodule import DataModule
from bench.train.distributed import is_rank_zero
from bench.train.module import Classifier, sgd
from bench.train.schedule import lr_factor


def build(params: Params, cell: Cell, data: Dataset, run_key: str = "") -> tuple[Classifier, DataModule]:
    """The LightningModule and DataModule of one cell; the same for `bench train` and `bench perf`."""
    L.seed_everything(cell.seed, workers=True, verbose=False)  # the initial weights depend on the seed only
    torch.set_num_threads(params.speed.threads)  # a CPU reduction's order, and so its bits, depends on it
    architecture = dict(
        variant=cell.variant,
        depth=cell.depth,
        shortcut=params.model.shortcut,
        num_classes=len(data.classes),
        in_channels=data.shape[0],
        zero_init_residual=params.model.zero_init_residual,
    )
    net = models.build_model(**architecture)
    net = speed.prepare(net, params.speed)
    t = params.train
    optimizer = partial(sgd, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov)
    module = Classifier(
        net,
        len(data.classes),
        optimizer,
        partial(lr_factor, cfg=t, depth=cell.depth),
        speed.training_forward(net, params.speed),
        run_key=run_key,
        architecture=architecture,
        data={"name": data.name, "classes": data.classes, "mean": data.mean, "std": data.std},
    )
    return module, DataModule(data, t.batch_size, t.augment, cell.seed, params.speed)


def trainer_flags(params: Params, train_images: int) -> dict:
    """params.yaml's `trainer` section and the step budget as L.Trainer arguments."""
    tr, t = params.trainer, params.train
    steps_per_epoch = max(1, train_images // t.batch_size)
    return dict(
        accelerator=tr.accelerator,
        devices=tr.devices,
        num_nodes=tr.num_nodes,
        strategy=tr.strategy,
        sync_batchnorm=tr.sync_batchnorm,
        precision=tr.precision,
        deterministic=tr.deterministic,
        benchmark=tr.benchmark,
        max_steps=t.max_steps,
        max_epochs=math.ceil(t.max_steps / steps_per_epoch) + 1,  # +1: a resumed epoch may repeat
        log_every_n_steps=tr.log_every_n_steps,
        check_val_every_n_epoch=tr.check_val_every_n_epoch,
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


def train(
    params: Params,
    cell: Cell,
    out: str | os.PathLike,
    data_dir: str | os.PathLike = "data/prepared",
    progress: bool = True,
    diagnose: bool = True,
) -> dict:
    """Train, test and record one cell in `out`, with its probe diagnostics unless `diagnose=False`; its metrics."""
    out = Path(out)
    quiet.silence()
    # check: the data, the Trainer's flags and the batch, before any file of the cell is touched
    data = load_prepared(data_dir, params.data)
    divergence, throughput = Divergence(params.trainer.log_every_n_steps), Throughput()
    probe = diagnostics_callback(params, data) if diagnose else None
    history = HistoryLogger(out / "history.csv")
    callbacks = [divergence, throughput, *([probe] if probe else []), EpochCheckpoint(out, history)]
    trainer = make_trainer(params, len(data.train.y), out, progress, callbacks)
    validate.batch(params, len(data.train.y), trainer.world_size)

    with locked(out) if is_rank_zero() else nullcontext():  # one run at a time in a cell's folder
        # build: resume the cell's own checkpoint, or start afresh
        key = run_key(params, cell, data.md5)
        ckpt_path, resuming = resume_or_start(out, cell, key, history)
        recorded = resume.recorded_timings(out, key) if resuming else {}  # a finished run, resumed with no step left
        announce(out, params, cell, data, resuming)
        env = provenance.environment()
        wandb = tracking.start(
            params,
            cell,
            data.name,
            settings.wandb_config(params, cell, data.md5, env),
            run_id=resume.wandb_run_id(out, resuming),
        )
        trainer.loggers = [history] + ([wandb] if wandb else [])
        if wandb:
            wandb.log_hyperparams({"world_size": trainer.world_size, "precision": str(trainer.precision)})
        module, dm = build(params, cell, data, run_key=key)

        # fit and evaluate; every image's prediction by the final weights, on the test and clean training splits
        start = time.perf_counter()
        errors = fit_and_test(trainer, module, dm, ckpt_path, out, history)
        wall_time_s = time.perf_counter() - start
        scored = None if divergence.step is not None else score_final(params, module, data, trainer)
        errors[record.CLEAN_TRAIN_ERROR] = predictions.error(scored, "train") if scored else None

        # record: the final weights (their hash goes into metrics.json), then the results
        sha = (
            weights.save(out, module.model, module.hparams.architecture, module.hparams.data, key)
            if is_rank_zero()
            else None
        )
        metrics = cell_metrics(cell, data, module, trainer, errors, wall_time_s, divergence, throughput, probe)
        metrics.update(run_key=key, weights_sha256=sha, **recorded)
        env.update(cell=cell.name, data_md5=data.md5, world_size=trainer.world_size, precision=str(trainer.precision))
        if is_rank_zero():
            write_results(out, metrics, env, history, probe and probe.results, scored)
        if wandb and is_rank_zero():  # the run lives on rank 0; the other ranks hold Lightning's stand-in
            tracking.finish(wandb, metrics, probe.results if probe else {})
    return metrics


def announce(out: Path, params: Params, cell: Cell, data: Dataset, resuming: bool) -> None:
    """On rank 0: what interrupted runs left removed, the resolved params into the cell's folder, their one-line
    summary, and a line where the CPU type differs from that of the result this run replaces."""
    if not is_rank_zero():
        return
    for name in remove_stale(out):
        print(f"{cell.name}: removed {out / name}, left by an interrupted run", flush=True)
    settings.write(out, params, cell)
    print(settings.summary(params, cell, data.name, data.md5), flush=True)
    if not resuming and (note := provenance.other_cpu_note(out, cell.name)):
        print(note, flush=True)


def cell_metrics(
    cell: Cell,
    data: Dataset,
    module: Classifier,
    trainer: L.Trainer,
    errors: dict,
    wall_time_s: float,
    divergence: Divergence,
    throughput: Throughput,
    probe: DiagnosticsCallback | None,
) -> dict:
    """The cell's metrics.json (bench.record.metrics); `wall_time_s`: fit and the final test."""
    return record.metrics(
        cell,
        data.name,
        data.md5,
        len(data.classes),
        len(data.train.y),
        len(data.test.y),
        sum(p.numel() for p in module.model.parameters()),
        errors,
        trainer.global_step,
        trainer.current_epoch,
        wall_time_s,
        throughput.images_per_s,
        divergence.step,
        probe.scalars() if probe else {},
    ).to_json()


def resume_or_start(out: Path, cell: Cell, key: str, history: HistoryLogger) -> tuple[str | None, bool]:
    """(ckpt_path for Trainer.fit, whether the run resumes); a resumed run's history starts from its rows."""
    ckpt_path, message = resume.checkpoint_to_resume(out, key)
    resuming = (message or "").startswith("resuming")
    if message and is_rank_zero():
        print(f"{cell.name}: {message}", flush=True)
    if resuming:
        history.load()
    return ckpt_path, resuming


def fit_and_test(
    trainer: L.Trainer, module: Classifier, dm: DataModule, ckpt_path: str | None, out: Path, history: HistoryLogger
) -> dict:
    """Fit, then evaluate the final weights on the validation and test splits (the validation loop holds both);
    the split losses and errors by key (TRAIN_LOSS, ...). The same for a finished run resumed with no step left."""
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)  # the cell's own checkpoint
    last_row = history.rows[max(history.rows)] if history.rows else {}

    # the final weights, saved as last.ckpt and named, so that under SLURM Lightning does not load its
    # requeue checkpoint (the preemption-time weights) instead; no logger: history.csv has the epochs' already
    module.finished = True
    trainer.save_checkpoint(out / "last.ckpt", weights_only=False)
    trainer.loggers = []
    final = trainer.validate(module, datamodule=dm, ckpt_path=str(out / "last.ckpt"), verbose=False, weights_only=True)
    evaluated = {k: v for split in final for k, v in split.items()}  # no val/* where the validation split is empty
    return {
        **{k: last_row.get(k) for k in (record.TRAIN_LOSS, record.TRAIN_ERROR)},  # blank for a requeued epoch
        **{k: evaluated.get(k) for k in (record.VAL_LOSS, record.VAL_ERROR, record.TEST_LOSS, record.TEST_ERROR)},
    }


def diagnostics_callback(params: Params, data: Dataset) -> DiagnosticsCallback:
    """The diagnostics callback on the cell's probe: the same class-stratified test images for every cell."""
    d = params.diagnostics
    idx = torch.tensor(probe_indices(data.test.y, d.probe_size, d.probe_seed))
    y = data.test.y[idx]
    record = {
        "seed": d.probe_seed,
        "size": len(idx),
        "indices": idx.tolist(),
        "class_counts": torch.bincount(y, minlength=len(data.classes)).tolist(),
    }
    return DiagnosticsCallback(
        normalise(data.test.x[idx], data.mean, data.std), y, len(data.classes), d.pairs, d.points, d.every, record
    )


def make_trainer(params: Params, train_images: int, out: Path, progress: bool, callbacks: list) -> L.Trainer:
    """The cell's Trainer; flags Lightning cannot honour here are an error naming the trainer section."""
    try:
        return L.Trainer(
            **trainer_flags(params, train_images),
            logger=False,
            enable_progress_bar=progress,
            default_root_dir=out,
            plugins=[resume.AtomicCheckpointIO()],
            callbacks=[*callbacks, *progress_bar(params, progress)],
        )
    except (ValueError, TypeError, MisconfigurationException) as e:
        tr = params.trainer
        raise ValueError(
            f"Lightning cannot run trainer.accelerator={tr.accelerator}, devices={tr.devices}, "
            f"num_nodes={tr.num_nodes}, strategy={tr.strategy}, precision={tr.precision} on this "
            f"machine: {e}"
        ) from None


def score_final(params: Params, module: Classifier, data: Dataset, trainer: L.Trainer) -> dict:
    """bench.train.predictions.score of the final weights, under the Trainer's precision."""
    context = trainer.strategy.precision_plugin.forward_context
    return predictions.score(module.model, data, params.speed.eval_batch_size, context)


def write_results(
    out: Path, metrics: dict, env: dict, history: HistoryLogger, diagnostics: dict | None, scored: dict | None
) -> None:
    """The cell's files (rank 0 writes them), metrics.json last: a cell with a metrics.json is complete (W&B
    comes after). `diagnostics` None: a run without them, whose folder keeps no diagnostics.json of an earlier run.
    Then the set-aside checkpoints of finished runs go, whose results these replace (bench.train.resume)."""
    history.save()
    predictions.write(out, scored)
    path = out / "diagnostics.json"
    write_json(path, diagnostics) if diagnostics is not None else path.unlink(missing_ok=True)
    write_json(out / "env.json", env)
    write_json(out / "metrics.json", metrics)
    for name in resume.remove_finished_set_aside(out):  # their results were the ones just replaced
        print(f"removed {out / name}: the final checkpoint of a finished run of other params", flush=True)
