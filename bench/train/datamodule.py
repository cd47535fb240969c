"""The Lightning side of the data: a prepared Dataset moved to the training device once, served as DeviceLoaders
(bench/train/data.py). Apart from the loading code, so that the stages that only read prepared data (the studies
of trained cells) do not import Lightning."""

from __future__ import annotations

import lightning as L

from bench.schema import Speed
from bench.train import speed
from bench.train.data import Dataset, DeviceLoader, Split
from bench.validate import local_batch_size


class DataModule(L.LightningDataModule):
    """Moves a prepared Dataset to the training device once and serves DeviceLoaders.

    The validation loop evaluates two loaders, val then test, so that test error is tracked per epoch
    for the convergence and generalisation-gap curves; `trainer.test` evaluates test alone.
    """

    def __init__(self, dataset: Dataset, batch_size: int, augment: bool, seed: int, speed_cfg: Speed):
        super().__init__()
        self.dataset, self.global_batch, self.augment, self.seed = dataset, batch_size, augment, seed
        self.eval_batch_size, self.memory_format = speed_cfg.eval_batch_size, speed.memory_format(speed_cfg)
        self._on_device: dict[str, Split] = {}

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        self.batch_size = local_batch_size(self.global_batch, self.trainer.world_size)
        for name in ("train", "val", "test"):
            s = getattr(self.dataset, name)
            self._on_device[name] = Split(s.x.to(device), s.y.to(device))

    def loader(
        self,
        split: Split,
        train: bool,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        epoch=lambda: 0,
        step=lambda: 0,
    ) -> DeviceLoader:
        """A DeviceLoader over `split` (on its device) with this data's augmentation, statistics and memory format."""
        d = self.dataset
        return DeviceLoader(
            split,
            batch_size if train else self.eval_batch_size,
            d.mean,
            d.std,
            train=train,
            pad=d.pad if self.augment else 0,
            flip=d.flip and self.augment,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            epoch=epoch,
            step=step,
            memory_format=self.memory_format,
        )

    def _loader(self, name: str, train: bool) -> DeviceLoader:
        return self.loader(
            self._on_device[name],
            train,
            self.batch_size,
            self.trainer.global_rank,
            self.trainer.world_size,
            epoch=lambda: self.trainer.current_epoch,
            step=lambda: self.trainer.global_step,
        )

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # made on the device already: skip Lightning's walk over the batch each step

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return [self._loader("val", train=False), self._loader("test", train=False)]

    def test_dataloader(self):
        return self._loader("test", train=False)
