"""Lesions (Veit et al. 2016, Sec. 4): the test error of a trained net with one block deleted at a time.

A residual net behaves like an ensemble of shallower paths and survives losing a block; a plain net
does not. Pure torch over a `bench.models` network (it addresses `model.blocks`), which it leaves as it found it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from bench.diagnostics.batchnorm import mode
from bench.record import AT_CHANCE


class _Deleted(nn.Module):
    """A block with its branch f removed: the block's `without_branch`, relu(shortcut(x)) after an addition that
    a ReLU follows (a plain block's shortcut is the identity and its input is post-ReLU, so it becomes x itself),
    the shortcut alone in a pre-activation block."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.without_branch(x)


def downsampling(block: nn.Module) -> bool:
    """A block that changes the shape (stride or channels): its shortcut, not the identity, carries the signal."""
    return block.conv1.stride != (1, 1) or block.conv1.in_channels != block.conv2.out_channels


def deletable(block: nn.Module) -> bool:
    """A residual block always is (its shortcut carries the signal); a plain block only if it keeps the shape."""
    return block.skip or not downsampling(block)


@contextmanager
def deleted(model: nn.Module, i: int):
    """Model with block i deleted for the duration, then the original block put back."""
    block = model.blocks[i]
    model.blocks[i] = _Deleted(block)
    try:
        yield model
    finally:
        model.blocks[i] = block


@torch.no_grad()
def lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chance: float, batch_size: int = 500) -> dict:
    """Test error of the intact model and with each block deleted in turn, in eval mode.

    Residual blocks lose their branch and keep the skip; plain blocks become the identity, except
    those that change shape, which cannot be deleted: None. The increases over the intact error are
    summarised apart for the downsampling blocks, whose shortcut is a projection or a subsampling:
    deleting their branch costs more, and it would dominate a single maximum. A model whose intact
    error is at chance (at least AT_CHANCE x `chance`, the chance error) has nothing to lose: `at_chance`
    is then true and its increases say nothing about robustness.

    Deleting block i leaves blocks 0 to i-1 as they are, so each lesioned net starts from block i's input as the
    intact net computed it and runs only what follows: half the work of a whole forward per block, and the same
    operations on the same values as running the net with the block deleted (`deleted`; tested).
    """
    blocks = list(model.blocks)
    wrong, counted = [0] * (len(blocks) + 1), [deletable(b) for b in blocks] + [True]  # the last: intact
    with mode(model, False):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            h, inputs = model.stem(xb), []
            for block in blocks:
                inputs.append(h)
                h = block(h)
            wrong[-1] += (model.classify(h).argmax(1) != yb).sum().item()
            for i, block in enumerate(blocks):
                if counted[i]:
                    h = block.without_branch(inputs[i])
                    for later in blocks[i + 1 :]:
                        h = later(h)
                    wrong[i] += (model.classify(h).argmax(1) != yb).sum().item()
    intact = wrong[-1] / len(y)
    per_block = [w / len(y) if c else None for w, c in zip(wrong[:-1], counted[:-1])]
    down = [downsampling(b) for b in model.blocks]

    def increases(in_down: bool) -> list[float]:
        return [e - intact for e, d in zip(per_block, down) if e is not None and d == in_down]

    mean = lambda v: sum(v) / len(v) if v else None
    return {
        "intact": intact,
        "per_block": per_block,
        "downsampling": down,
        "at_chance": intact >= AT_CHANCE * chance,
        "mean_increase": mean(increases(False)),
        "max_increase": max(increases(False), default=None),
        "downsampling_mean_increase": mean(increases(True)),
    }
