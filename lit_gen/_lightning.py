"""The one module that touches Lightning's private attributes. Each function says why no public API does the
job; tests/test_lightning_internals.py pins each one, so a Lightning upgrade that moves them fails there."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import DDPStrategy

# --- models ---


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The trainer ``module`` is attached to, or None: ``LightningModule.trainer`` raises without one, and models
    also run outside a fit (``sample``, ``evaluate``, tests)."""
    return module._trainer


def should_update_logs(trainer: Trainer) -> bool:
    """Whether this training batch's metrics reach the loggers (every ``log_every_n_steps``): Lightning's own
    test, the one its LearningRateMonitor uses, is a property of the private logger connector."""
    return trainer._logger_connector.should_update_logs


def ddp_kwargs(strategy: DDPStrategy) -> dict[str, Any]:
    """The keyword arguments ``strategy`` will pass to ``DistributedDataParallel`` (a live dict: changes made
    before the strategy wraps the model take effect). DDPStrategy takes them only in its constructor, and the
    CLI builds it from a plain ``--trainer.strategy ddp``."""
    return strategy._ddp_kwargs


def batches_done(trainer: Trainer) -> int:
    """Training batches processed so far in the fit, restored on resume (unlike ``global_step`` it does not count
    optimizer steps, which differ per batch when a family has several optimizers). The fit loop's progress
    counters are the only such count, and the epoch loop is a private class."""
    return trainer.fit_loop.epoch_loop.batch_progress.total.processed


def epoch_batches_done(trainer: Trainer) -> int:
    """Training batches processed so far in the current epoch (restored on resume), from the same counters."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed
