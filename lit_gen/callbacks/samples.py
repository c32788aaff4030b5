"""Sample grids from a fixed noise batch, written as PNG into the run directory and handed to the logger."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from lit_gen._lightning import batches_done
from lit_gen.sampling import save_image_grid, save_scatter


def log_image(trainer: Trainer, key: str, path: Path) -> None:
    """Hands a PNG that was just written to every logger that can show images (W&B as a ``wandb.Image``),
    at step = training batches done, the step of every logged metric."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=batches_done(trainer))
        elif isinstance(logger, TensorBoardLogger):
            from torchvision.io import read_image

            logger.experiment.add_image(key, read_image(str(path)), global_step=batches_done(trainer))


class SampleGrid(Callback):
    """Every ``every_n_batches`` training batches (and at the end of fit), samples ``num_samples`` from the
    model with a fixed seed — the same latents each time — and writes ``samples/batch_XXXXXXX.png`` into the
    run directory: an image grid for image models, a scatter plot over the true modes for 2-D toy data.

    Args:
        every_n_batches: how often, in training batches.
        num_samples: samples per grid.
        seed: seed of the fixed noise batch.
        nrow: images per grid row (default: the square root of ``num_samples``).
    """

    def __init__(
        self, every_n_batches: int = 500, num_samples: int = 64, seed: int = 1234, nrow: int | None = None
    ):
        self.every_n_batches, self.num_samples, self.seed = every_n_batches, num_samples, seed
        self.nrow = nrow or max(1, int(round(num_samples**0.5)))
        self._last_written = -1

    def _write(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = batches_done(trainer)
        if trainer.fast_dev_run or batches == self._last_written or not trainer.is_global_zero:
            return
        self._last_written = batches
        samples: Tensor = pl_module.generate(self.num_samples, rng=torch.Generator().manual_seed(self.seed))
        path = Path(trainer.default_root_dir) / "samples" / f"batch_{batches:07d}.png"
        if samples.dim() == 4:
            save_image_grid(samples, path, nrow=self.nrow)
        elif samples.dim() == 2 and samples.is_floating_point():
            modes = getattr(trainer.datamodule, "modes", None)
            save_scatter(samples, path, modes=modes, title=f"{batches} batches")
        else:
            return
        log_image(trainer, "samples", path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_batches > 0 and batches_done(trainer) % self.every_n_batches == 0:
            self._write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)
