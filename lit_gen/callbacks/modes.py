"""Logs the toy mode metrics (modes captured, high-quality share, reverse KL) during training."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_gen._lightning import batches_done
from lit_gen.loggers import define_wandb_summaries
from lit_gen.metrics.modes import ModeCoverage
from lit_gen.utils import derived_seed


class ModeMetrics(Callback):
    """Every ``every_n_batches`` batches and at the end of fit, draws ``num_samples`` samples (split over DDP
    ranks, distinct noise per rank) and logs ``val/modes``, ``val/high_quality`` and ``val/reverse_kl``
    against the datamodule's ``modes`` and ``std`` (VEEGAN/PacGAN: 2,500 samples, 3 std). Under ``WandbLogger``
    the run summary keeps the best (most modes, highest share, lowest KL) and the last value of each."""

    #: W&B summary goals (``lit_gen.loggers.define_wandb_summaries``)
    GOALS = {"val/modes": "max", "val/high_quality": "max", "val/reverse_kl": "min", "val/nfe": "last"}

    def __init__(
        self, every_n_batches: int = 500, num_samples: int = 2500, threshold: float = 3.0, seed: int = 0
    ):
        self.every_n_batches, self.num_samples, self.threshold, self.seed = (
            every_n_batches,
            num_samples,
            threshold,
            seed,
        )
        self.last: dict[str, float] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            define_wandb_summaries(trainer, self.GOALS)

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        datamodule = trainer.datamodule
        metric = ModeCoverage(datamodule.modes, datamodule.std, self.threshold).to(pl_module.device)
        per_rank = -(-self.num_samples // trainer.world_size)
        rng = torch.Generator().manual_seed(
            derived_seed(self.seed, trainer.global_rank, batches_done(trainer))
        )
        metric.update(pl_module.generate(per_rank, rng=rng))
        self.last = {f"val/{k}": float(v) for k, v in metric.compute().items()}
        if hasattr(pl_module, "last_nfe"):  # diffusion: network evaluations per sample
            self.last["val/nfe"] = float(pl_module.last_nfe)
        return self.last

    def _log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        values = self.evaluate(trainer, pl_module)
        for (
            name,
            value,
        ) in values.items():  # for checkpoint monitors, early stopping and the end-of-fit summary
            trainer.callback_metrics[name] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=batches_done(trainer))

    def _due(self, trainer: Trainer) -> bool:
        return self.every_n_batches > 0 and batches_done(trainer) % self.every_n_batches == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._due(trainer):
            self._log(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._due(trainer):  # a last batch that was due has just logged these values
            self._log(trainer, pl_module)
