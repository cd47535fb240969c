"""`bench perf`: training images/s through the project's real path and through a bare loop, side by side.

The real path is `bench train`'s: the same LightningModule, DataModule, Trainer flags, callbacks and
history logger (checkpoints, evaluation and W&B left out: they are not part of a training step).
The bare loop is what a hand-written PyTorch script would do with the same network, batches,
optimizer, schedule and precision: forward, loss, backward, step, and the loss and error sums that
training error needs. Both skip `warmup` steps (compilation, cuDNN autotuning), then time `steps`
steps between two device syncs. The data are synthetic (random images of the dataset's shape) unless
a prepared folder is named: speed does not depend on the pixels.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from bench import provenance, validate
from bench.config import Params
from bench.record import Cell
from bench.train import speed
from bench.train.callbacks import Divergence, HistoryLogger, Throughput
from bench.train.data import Dataset, Split
from bench.train.stage import build, trainer_flags

# Lightning precision flag -> autocast dtype for the bare loop (None: no autocast)
AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def synthetic(shape=(3, 32, 32), train_images: int = 45_000, classes: int = 10, seed: int = 0) -> Dataset:
    """Random uint8 images with CIFAR-10's split sizes and augmentation (pad 4, flips)."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return Split(
            torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
            torch.randint(0, classes, (n,), generator=g),
        )

    return Dataset(
        name="synthetic",
        md5="",
        train=split(train_images),
        val=split(1),
        test=split(1),
        classes=[str(c) for c in range(classes)],
        mean=[0.5] * shape[0],
        std=[0.25] * shape[0],
        flip=True,
        pad=4,
    )


class Losses(L.Callback):
    """Every training step's loss, kept on the device until the end."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())


def through_bench(params: Params, variant: str, depth: int, data: Dataset, warmup: int, profiler=None) -> dict:
    """The Lightning path of `bench train`, minus checkpoints, evaluation and W&B."""
    module, dm = build(params, Cell(variant, depth, 0), data)
    throughput, losses = Throughput(warmup), Losses()  # Throughput: as `bench train` measures itself
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            **trainer_flags(params, len(data.train.y)),
            limit_val_batches=0,
            logger=[HistoryLogger(Path(tmp) / "history.csv")],
            callbacks=[Divergence(params.trainer.log_every_n_steps), throughput, losses],
            enable_checkpointing=False,
            enable_progress_bar=False,
            default_root_dir=tmp,
            profiler=profiler,
        )
        trainer.fit(module, datamodule=dm)
    batch = params.train.batch_size
    return _result(throughput.images // batch, throughput.seconds, batch, losses.losses)


def through_bare_loop(
    params: Params, variant: str, depth: int, data: Dataset, warmup: int, device: torch.device
) -> dict:
    """The same step as a hand-written loop: no Lightning, no torchmetrics, no callbacks."""
    module, dm = build(params, Cell(variant, depth, 0), data)  # the same weights, optimizer, schedule and batches
    model = module.model.to(device).train()
    forward = speed.training_forward(model, params.speed)
    opt_config = module.configure_optimizers()
    opt, sched = opt_config["optimizer"], opt_config["lr_scheduler"]["scheduler"]
    dtype = AUTOCAST[params.trainer.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    epoch = 0
    loader = dm.loader(
        Split(data.train.x.to(device), data.train.y.to(device)), True, params.train.batch_size, epoch=lambda: epoch
    )
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    losses, step, start, total = [], 0, None, params.train.max_steps
    while step < total:
        for x, y in loader:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = forward(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.detach() * len(y)  # what the training error and loss curves need
            correct += (logits.detach().argmax(1) == y).sum()
            losses.append(loss.detach())
            step += 1
            if step == warmup:
                speed.sync(device)
                start = time.perf_counter()
            if step == total:
                break
        epoch += 1
    speed.sync(device)
    return _result(step - warmup, time.perf_counter() - start, params.train.batch_size, losses)


def alone(params: Params, device: str, max_steps: int) -> Params:
    """`params` for a timed run: `max_steps` steps in one process on one `device` (cpu or cuda)."""
    return dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, max_steps=max_steps),
        trainer=dataclasses.replace(
            params.trainer,
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            num_nodes=1,
            strategy="auto",
            sync_batchnorm=False,
        ),
    )


def profile(
    params: Params, variant: str, depth: int, device: str, warmup: int, data: Dataset, out: Path, steps: int = 10
) -> Path:
    """One more run of the real path, with torch.profiler recording `steps` steps after the warm-up, through
    Lightning's PyTorchProfiler, which also times Lightning's own hooks. Writes out/fit-profile.txt (operators
    and hooks by total device time, by CPU time on a CPU) and a Chrome trace beside it (Perfetto opens it)."""
    from lightning.pytorch.profilers import PyTorchProfiler
    from torch.profiler import ProfilerActivity, schedule

    cuda = device == "cuda"
    profiler = PyTorchProfiler(
        dirpath=out,
        filename="profile",
        record_module_names=False,
        row_limit=40,
        sort_by_key="cuda_time_total" if cuda else "cpu_time_total",
        schedule=schedule(wait=warmup, warmup=1, active=steps),
        activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])],
    )
    through_bench(alone(params, device, warmup + 1 + steps + 1), variant, depth, data, warmup, profiler)
    return out


def _result(steps: int, seconds: float | None, batch: int, losses: list) -> dict:
    if not seconds:
        raise ValueError("no step was timed: the run stopped during the warm-up (diverged?)")
    return {
        "images_per_s": steps * batch / seconds,
        "step_ms": 1000 * seconds / steps,
        "steps": steps,
        "losses": torch.stack(losses).float().cpu().tolist(),
    }


def perf(
    params: Params,
    variant: str,
    depth: int,
    device: str,
    steps: int = 100,
    warmup: int = 10,
    repeats: int = 3,
    data: Dataset | None = None,
    progress: bool = True,
) -> dict:
    """images/s through `bench train`'s path and a bare loop, each the median of `repeats` alternating runs.
    The cell and `speed` are validated by the caller (bench.validate.run)."""
    _check(params, device, steps, warmup, repeats)
    data = data or synthetic()
    validate.batch(params, len(data.train.y), world_size=1)
    params = alone(params, device, warmup + steps)
    runs = {"bench": [], "bare": []}
    for r in range(repeats):
        for path in runs:
            if progress:
                where = f"{variant}-{depth} {path} {r + 1}/{repeats} ({warmup}+{steps} steps)"
                print(f"bench perf: {where}", file=sys.stderr, flush=True)
            run = (
                through_bench(params, variant, depth, data, warmup)
                if path == "bench"
                else through_bare_loop(params, variant, depth, data, warmup, torch.device(device))
            )
            runs[path].append(run)
    hardware = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{provenance.cpu_name()} ({torch.get_num_threads()} threads)"
    )
    return {
        "variant": variant,
        "depth": depth,
        "batch": params.train.batch_size,
        "device": device,
        "hardware": hardware,
        "precision": params.trainer.precision,
        "trainer.deterministic": params.trainer.deterministic,
        "trainer.benchmark": params.trainer.benchmark,
        **{f"speed.{k}": v for k, v in dataclasses.asdict(params.speed).items()},
        "data": data.name,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "torch": torch.__version__,
        "lightning": L.__version__,
        **_compare(runs),
    }


def _check(params: Params, device: str, steps: int, warmup: int, repeats: int) -> None:
    if params.trainer.precision not in AUTOCAST:
        raise ValueError(f"bench perf supports precision {', '.join(AUTOCAST)}; got {params.trainer.precision!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA GPU")
    if steps < 1 or warmup < 1 or repeats < 1:
        raise ValueError("--steps, --warmup and --repeats must be at least 1")


def _compare(runs: dict[str, list[dict]]) -> dict:
    """Each path's medians and samples, and the real path's overhead over the bare loop."""
    summary = {
        path: {
            "images_per_s": round(statistics.median(x["images_per_s"] for x in rs), 1),
            "step_ms": round(statistics.median(x["step_ms"] for x in rs), 3),
            "samples": [round(x["images_per_s"], 1) for x in rs],
        }
        for path, rs in runs.items()
    }
    pairs = list(zip(runs["bench"], runs["bare"]))
    overheads = [100 * (bare["images_per_s"] / bench["images_per_s"] - 1) for bench, bare in pairs]
    bench_losses, bare_losses = runs["bench"][0]["losses"], runs["bare"][0]["losses"]
    return {
        **summary,
        # extra time per step of the real path over the bare loop: the median over the repeats of each
        # pair run back to back, which cancels the drift of a shared machine between pairs
        "lightning_overhead_pct": round(statistics.median(overheads), 2),
        "lightning_overhead_pct_range": [round(min(overheads), 2), round(max(overheads), 2)],
        # the same in milliseconds per step: Lightning's and torchmetrics' fixed cost, whatever the net
        "lightning_overhead_ms": round(statistics.median(a["step_ms"] - b["step_ms"] for a, b in pairs), 3),
        # the same step: the two paths' losses, step by step, from the same weights and batches
        "max_loss_difference": max(abs(a - b) for a, b in zip(bench_losses, bare_losses)),
    }
