"""What every generative family shares, so that a family's file holds only its maths.

A new family is one file with a subclass of ``GenerativeModule`` that writes:

- ``__init__``: ``super().__init__(noise_seed)``, then its networks and
  ``self.save_hyperparameters_without_modules()``;
- ``training_step``: its loss on ``self.batch_data(batch)``. Training noise comes from ``batch_noise`` (or
  ``noise_rng``) over the family's named streams (a small ``IntEnum``); metrics are logged only where
  ``logs_this_batch``; once the batch's noise is drawn, ``self.batches_seen += 1`` counts the batch. (In the
  step, not in ``on_train_batch_end``: Lightning runs the callbacks' ``on_train_batch_end``, where checkpoints
  are saved, before the module's.);
- ``configure_optimizers``: usually ``return self.optimizer_config(self.optimizer, self.parameters(),
  self.lr_scheduler)``, optimizer and scheduler injected from the config;
- ``generate(num_samples, rng)``: its sampler.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_gen._lightning import attached_trainer, should_update_logs
from lit_gen.checkpoints import batches_trained
from lit_gen.optim import make_optimizer
from lit_gen.utils import batch_data, derived_seed

#: the phase slot of training noise seeds (see ``GenerativeModule.noise_rng``)
TRAINING = 0


class GenerativeModule(LightningModule):
    """Base class of the families. ``generate`` returns samples in data space:

    - images: float tensor (N, C, H, W) with values in [0, 1];
    - points: float tensor (N, D) (2-D toy data);
    - tokens: long tensor (N, T) (text; the family decodes it).

    ``rng`` is a ``torch.Generator`` on the CPU: the same seed gives the same samples.

    Training noise is a pure function of (``noise_seed``, stream, ``batches_seen``): a resumed run draws exactly
    what the uninterrupted run would have. ``noise_seed`` is stored in every checkpoint and ``batches_seen`` is
    a buffer, so the state dict holds it.

    Args:
        noise_seed: base seed of the family's training noise; None takes the seed set by ``seed_everything``.
    """

    def __init__(self, noise_seed: int | None = None) -> None:
        super().__init__()
        self.noise_seed = torch.initial_seed() if noise_seed is None else noise_seed
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    batch_data = staticmethod(batch_data)

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

    def generate(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    # --- training noise --------------------------------------------------------------------------------------

    def noise_rng(self, stream: int) -> torch.Generator:
        """A CPU generator for noise ``stream`` of this training batch, seeded from (noise_seed, TRAINING,
        batches_seen, stream): the same on every rank. ``TRAINING`` (0) keeps training draws apart from any
        other draws a family seeds from ``noise_seed`` (the VAE's evaluation noise has its own layout)."""
        seed = derived_seed(self.noise_seed, TRAINING, int(self.batches_seen), stream)
        return torch.Generator().manual_seed(seed)

    def batch_noise(
        self, stream: int, shape: Sequence[int], draw: Callable[..., Tensor] = torch.randn, batch_dim: int = 0
    ) -> Tensor:
        """This rank's share of the noise ``stream`` draws for the *global* training batch: ``draw``
        (``torch.randn`` / ``torch.rand``) of ``shape`` (this rank's shape, ``batch_dim`` its batch dimension)
        with ``batch_dim`` enlarged ``world_size`` times, from ``noise_rng(stream)``; rank ``r`` takes rows
        ``r, r + n, r + 2n, ...`` (the rows of the samples ``ResumableSampler`` gives it), on this module's
        device. So ``n`` processes with batch ``b`` draw exactly the noise one process with batch ``n * b``
        draws, each row paired with the same sample, and one process draws ``draw(shape)``.
        """
        trainer = attached_trainer(self)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        shape = list(shape)
        shape[batch_dim] *= world
        values = draw(shape, generator=self.noise_rng(stream))
        index = (slice(None),) * (batch_dim % len(shape)) + (slice(rank, None, world),)
        return values[index].to(self.device).contiguous()

    # --- optimization and logging ----------------------------------------------------------------------------

    def optimizer_config(
        self,
        optimizer: OptimizerCallable,
        params: Iterable,
        lr_scheduler: LRSchedulerCallable | None = None,
        key: str = "model.optimizer",
        interval: Literal["epoch", "step"] = "epoch",
    ):
        """What ``configure_optimizers`` returns for one injected ``optimizer`` over ``params`` and its optional
        ``lr_scheduler``, stepped every ``interval``. A setting the optimizer rejects is a one-line error naming
        the config key ``key``."""
        built = make_optimizer(optimizer, params, key)
        if lr_scheduler is None:
            return built
        return {"optimizer": built, "lr_scheduler": {"scheduler": lr_scheduler(built), "interval": interval}}

    def batches_for_optimizer_steps(self, steps: int) -> int:
        """Training batches it takes from here to make ``steps`` more optimizer steps (what Lightning's
        ``global_step`` and ``max_steps`` count): one per batch here; a family that steps several optimizers per
        batch (the GAN) says otherwise. The progress bar sizes the last epoch with it."""
        return steps

    def mean_over_ranks(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """``values`` (scalars) averaged over the DDP ranks in one all-reduce (``sync_dist`` would make one per
        value): with equal per-rank batches, a batch mean of the global batch, what one process with the whole
        batch logs. Unchanged in a single process. Every rank must call it at the same batch."""
        trainer = attached_trainer(self)
        if trainer is None or trainer.world_size == 1:
            return values
        keys = list(values)
        mean = trainer.strategy.reduce(torch.stack([values[k].float() for k in keys]), reduce_op="mean")
        return dict(zip(keys, mean.unbind()))

    def logs_this_batch(self, batch_idx: int) -> bool:
        """Whether this training batch logs its metrics: on the batches whose metrics Lightning writes to the
        loggers (every ``trainer.log_every_n_steps``; the test Lightning's own LearningRateMonitor uses) and on the
        last batch of an epoch or of ``max_steps``, so that ``trainer.callback_metrics`` ends a fit with the last
        batch's values. A ``self.log`` call costs ~0.3 ms of CPU, as much as a toy model's whole step.

        Call it in ``training_step``: with automatic optimization this batch's optimizer step is still to come."""
        trainer = attached_trainer(self)
        if trainer is None:  # called outside a fit (e.g. a test calling training_step): nothing to log to
            return False
        if should_update_logs(trainer) or trainer.fast_dev_run:
            return True
        steps = trainer.global_step + (1 if self.automatic_optimization else 0)
        return batch_idx + 1 >= trainer.num_training_batches or 0 <= trainer.max_steps <= steps

    def on_fit_start(self) -> None:
        # dropout (and anything else drawing from the global torch RNG) would draw the same on every DDP rank,
        # which ``seed_everything`` seeds alike: each rank gets its own stream (nanoGPT seeds 1337 + rank). Rank 0
        # keeps the seed's own stream, so a single process draws what it always did; a resumed run then restores
        # each rank's saved RNG state.
        trainer = attached_trainer(self)
        if trainer is not None and trainer.global_rank > 0:
            torch.manual_seed(derived_seed(torch.initial_seed(), trainer.global_rank))

    # --- checkpoint ------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noise_seed"] = self.noise_seed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.noise_seed = checkpoint.get("noise_seed", self.noise_seed)
        state = checkpoint.get("state_dict")
        if state is not None and "batches_seen" not in state:  # older autoregressive checkpoints counted none
            state["batches_seen"] = torch.tensor(batches_trained(checkpoint) or 0, dtype=torch.long)
