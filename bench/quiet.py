"""The one place that silences what Lightning and wandb print on every cell but tells a user nothing.

Only these exact messages are dropped; every other log line, warning and error still shows.
"""

from __future__ import annotations

import logging
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
