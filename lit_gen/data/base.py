"""The data-loading part every DataModule shares: seeded shuffling, workers, train/val loaders."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, random_split

from lit_gen.errors import LitGenError


class DataModule(LightningDataModule):
    """Subclasses fill ``self.train_set`` and ``self.val_set`` in ``setup``.

    Args:
        batch_size: samples per batch (per process under DDP).
        num_workers: DataLoader worker processes.
        seed: seeds the train/val split and the shuffling order, independently of ``seed_everything``.
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise LitGenError(f"data.batch_size must be a positive integer, got {batch_size}")
        if num_workers < 0:
            raise LitGenError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def split(self, dataset: Dataset, val_fraction: float) -> tuple[Dataset, Dataset]:
        """A seeded random train/val split of one dataset."""
        n_val = max(1, int(round(len(dataset) * val_fraction)))
        generator = torch.Generator().manual_seed(self.seed)
        train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
        return train, val

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
