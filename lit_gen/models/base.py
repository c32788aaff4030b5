"""What every generative family offers the CLI, the callbacks and the metrics."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

# lit_gen.models.gan imports these helpers from here
from lit_gen.optim import make_optimizer  # noqa: F401
from lit_gen.utils import derived_seed, eval_mode  # noqa: F401


class GenerativeModule(LightningModule):
    """Base class of the families. ``generate`` returns samples in data space:

    - images: float tensor (N, C, H, W) with values in [0, 1];
    - points: float tensor (N, D) (2-D toy data);
    - tokens: long tensor (N, T) (text; the family decodes it).

    ``generator`` is a ``torch.Generator`` on the CPU: the same seed gives the same samples.
    """

    def save_hyperparameters_without_modules(self) -> None:
        """``save_hyperparameters`` for modules whose arguments include networks.

        Under the CLI the stored hyper-parameters are the config (class paths and plain values), which is what
        lets ``load_model`` rebuild the model from a checkpoint. Built in Python, network objects are dropped
        (their weights are in the state dict) so that checkpoints stay loadable with ``weights_only=True``.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(frame=inspect.currentframe().f_back)
        for key in [k for k, v in self.hparams.items() if isinstance(v, nn.Module)]:
            del self.hparams[key]

    def generate(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def batches_for_optimizer_steps(self, steps: int) -> int:
        """Training batches it takes from here to make ``steps`` more optimizer steps (what Lightning's
        ``global_step`` and ``max_steps`` count): one per batch here; a family that steps several optimizers per
        batch (the GAN) says otherwise. The progress bar sizes the last epoch with it."""
        return steps

    def _logs_this_batch(self, batch_idx: int) -> bool:
        """Whether this training batch logs its metrics: on the batches whose metrics Lightning writes to the
        loggers (every ``trainer.log_every_n_steps``; the test Lightning's own LearningRateMonitor uses) and on the
        last batch of an epoch or of ``max_steps``, so that ``trainer.callback_metrics`` ends a fit with the last
        batch's values. A ``self.log`` call costs ~0.3 ms of CPU, as much as a toy model's whole step.

        Call it in ``training_step``: with automatic optimization this batch's optimizer step is still to come."""
        trainer = self._trainer
        if trainer is None:  # called outside a fit (e.g. a test calling training_step): nothing to log to
            return False
        if trainer._logger_connector.should_update_logs or trainer.fast_dev_run:
            return True
        steps = trainer.global_step + (1 if self.automatic_optimization else 0)
        return batch_idx + 1 >= trainer.num_training_batches or 0 <= trainer.max_steps <= steps

    def global_draw(
        self, draw, seed: int, shape: Sequence[int], dim: int = 0, dtype: torch.dtype | None = None
    ) -> Tensor:
        """This rank's share of noise drawn for the *global* batch: ``draw`` (``torch.rand`` / ``torch.randn``)
        of ``shape`` (this rank's shape, ``dim`` its batch dimension) with ``dim`` enlarged ``world_size``
        times, from a CPU generator seeded with ``seed``; rank ``r`` takes rows ``r, r + n, r + 2n, ...`` (the
        rows of the samples ``ResumableSampler`` gives it), on this module's device. So ``n`` processes with
        batch ``b`` draw exactly the noise one process with batch ``n * b`` draws, each row paired with the
        same sample, and one process draws ``draw(shape)``.
        """
        trainer = self._trainer
        rank = getattr(trainer, "global_rank", 0) if trainer is not None else 0
        world = max(getattr(trainer, "world_size", 1) if trainer is not None else 1, rank + 1)
        shape = list(shape)
        shape[dim] *= world
        values = draw(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        index = (slice(None),) * (dim % len(shape)) + (slice(rank, None, world),)
        return values[index].to(self.device).contiguous()
