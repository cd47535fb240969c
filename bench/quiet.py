"""The one place that silences what Lightning and wandb print on every cell but tells a user nothing.

Only these exact messages are dropped; every other log line, warning and error still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

NOISE = (  # the start of each message dropped, and why it says nothing here
    "💡 Tip",  # an advertisement for a model registry
    "GPU available",
    "TPU available",
    "HPU available",  # the Trainer's devices: env.json and the W&B config record them
    "Restoring states from the checkpoint path",
    "Loaded model weights from the checkpoint",  # the same reload
)
IGNORED_WARNINGS = (
    # cells run outside srun on purpose (dvc repro on a login node, bench grid); under srun Lightning sees SLURM
    "The `srun` command is available on your system but is not used",
    ".*LeafSpec.*",  # Lightning 2.6's own use of a torch API that torch 2.13 deprecates
    # our epoch-level values come from torchmetrics' compute(), which already reduces across processes
    ".*when logging on epoch level in distributed setting.*",
    # the cell's folder is ours (config, metrics, history and checkpoints together; resume reads it)
    r"Checkpoint directory .* exists and is not empty",
    r"The dirpath has changed from",  # a cell resumed in a moved folder (a copy, DVC's exp workspace)
    # digits give 10 steps an epoch; the progress bar and history need no step-level log at all
    r".*is smaller than the logging interval.*",
    # a finished run resumed with no step left computes its (empty) training metrics: none are recorded from it
    r".*was called before the ``update`` method.*",
    # a SLURM requeue mid-epoch: the sampler is seeded per epoch, so the batches left are the uninterrupted run's
    # (tests/test_resume.py), and history.csv leaves that epoch's training means blank (bench/train/callbacks.py)
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # DDP's gradient buckets and BN/1x1 conv gradients' strides on the CPU: a copy per step, never other values
    r".*Grad strides do not match bucket view strides.*",
)
LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE)


def silence() -> None:
    """Install the filters (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop())
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def interactive() -> bool:
    """Whether a person watches the output: a terminal, and no DVC stage running the command (DVC sets
    DVC_STAGE). Progress bars and W&B's end-of-run summary show only then; logs stay readable."""
    return sys.stdout.isatty() and "DVC_STAGE" not in os.environ
