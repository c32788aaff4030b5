"""The data-loading part every DataModule shares: seeded shuffling, workers, train/val loaders."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler, random_split

from lit_gen._lightning import epoch_batches_done
from lit_gen.errors import LitGenError


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffling that can start an epoch in the middle.

    It is a ``DistributedSampler`` (the order of epoch ``e`` is a permutation drawn from ``seed + e``; rank ``r``
    of ``n`` takes every ``n``-th index from position ``r``), used with one process too, so one process with a
    batch of ``n * b`` sees exactly the samples that ``n`` DDP ranks with batches of ``b`` see together. Being a
    ``DistributedSampler``, Lightning does not replace it under DDP. ``resume(epoch, batches)`` makes the next
    iteration of that epoch skip the samples of the ``batches`` batches already trained on.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip) for the next iteration

    def resume(self, epoch: int, batches: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``batches`` batches."""
        self.epoch = epoch
        self._resume = (epoch, batches * self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        super().set_epoch(epoch)

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            skip, self._resume = self._resume[1], None
        return iter(list(super().__iter__())[skip:])


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` over a ``ResumableSampler`` whose position Lightning checkpoints.

    Lightning stores the ``state_dict`` of loaders that have one in the checkpoint and hands it back to
    ``load_state_dict`` before the resumed epoch's first batch is drawn; without this it restarts a
    mid-epoch epoch from its first batch. The position is read from the trainer's count of batches trained
    on in this epoch (the loader itself runs ahead: Lightning pre-fetches), not from the loader.
    """

    trainer = None  # set by DataModule._loader; None outside Lightning

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableSampler = self.sampler
        epoch, batches = sampler.epoch, 0
        if self.trainer is not None:
            epoch = self.trainer.current_epoch
            batches = epoch_batches_done(self.trainer)
            if batches >= self.trainer.num_training_batches:  # the epoch is done: the next one starts afresh
                epoch, batches = epoch + 1, 0
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.resume(int(state["epoch"]), int(state["batches"]))


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
        """A seeded random train/val split of one dataset; ``val_fraction: 0`` leaves the validation set empty."""
        if not 0.0 <= val_fraction < 1.0:
            raise LitGenError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        n_val = int(round(len(dataset) * val_fraction))
        if val_fraction > 0:
            n_val = max(1, n_val)
        generator = torch.Generator().manual_seed(self.seed)
        train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
        return train, val

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # a generator for the loader's own draws (worker seeds): iterating never touches the global RNG
        generator = torch.Generator().manual_seed(self.seed)
        if not train:
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                generator=generator,
            )
        trainer = self.trainer
        sampler = ResumableSampler(
            dataset,
            batch_size=self.batch_size,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            seed=self.seed,
        )
        loader = ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )
        loader.trainer = trainer
        return loader

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """What ``test`` scores: ``self.test_set`` when a subclass sets one, else the validation set."""
        test_set = getattr(self, "test_set", None)
        return self._loader(self.val_set if test_set is None else test_set, train=False)
