"""Every private Lightning, jsonargparse, torchmetrics and torch name lit_gen uses, and nowhere else.

Each access is a small function (or subclass) here saying why no public API does.
``tests/test_lightning_internals.py`` pins the behaviour each relies on, so a release that changes one fails a
named test, not a user's run; it also checks that no other module touches a private name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, instantiate_module
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

# --- training progress (Lightning's loops are private classes: ``_FitLoop``, ``_TrainingEpochLoop``) -------------


def batches_done(trainer: Trainer) -> int:
    """Training batches processed so far, over all epochs (restored on resume). Unlike ``global_step`` it does
    not count optimizer steps, which differ per batch when a family has several optimizers."""
    return trainer.fit_loop.epoch_loop.batch_progress.total.processed


def batches_done_this_epoch(trainer: Trainer) -> int:
    """Training batches processed so far in the current epoch (restored on resume)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def checkpoint_batches_done(checkpoint: Mapping[str, Any]) -> int:
    """The training batches a checkpoint written by ``fit`` was saved after (its fit loop's state);
    ``KeyError`` for one saved outside ``fit``."""
    return int(checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"])


def end_restart_after_an_epochs_last_batch(trainer: Trainer) -> None:
    """Call in ``on_train_start``. Resumed from a stop on an epoch's last batch, Lightning (2.6) has completed
    that epoch while restoring but still calls the restart "mid-epoch", so the next epoch would start without
    counting itself ready/started or calling ``on_train_epoch_start`` (``current_epoch`` one behind from then
    on); ending the restart stage lets it start as in an uninterrupted run."""
    fit_loop = trainer.fit_loop
    epochs = fit_loop.epoch_progress.total
    if fit_loop.restarted_mid_epoch and epochs.completed == epochs.ready:
        fit_loop.reset_restart_stage()


# --- callbacks -------------------------------------------------------------------------------------------------


def stop_after_this_batch(trainer: Trainer) -> None:
    """Makes ``fit`` stop as on SIGTERM: at the end of the current training batch, on every rank (rank 0's flag
    is broadcast), raising ``SIGTERMException`` through ``on_exception``. No public setter: ``should_stop`` ends
    the fit normally, without the exception and its exit code."""
    trainer._signal_connector.received_sigterm = True


def cluster_environment(trainer: Trainer) -> ClusterEnvironment:
    """The cluster environment the trainer chose, the one Lightning's signal connector asks about SLURM
    auto-requeue. ``trainer.strategy.cluster_environment`` exists only for parallel strategies, not for a
    single-device job."""
    return trainer._accelerator_connector.cluster_environment


def slurm_save_and_requeue(trainer: Trainer, signum: int) -> None:
    """Lightning's answer to SLURM's requeue signal, called outside the signal handler: finalizes the loggers,
    saves ``hpc_ckpt_N.ckpt`` into ``trainer.default_root_dir`` and runs ``scontrol requeue`` (rank 0). No
    public API runs it."""
    trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)


def last_saved_step(checkpoint: ModelCheckpoint) -> int:
    """The global step ``checkpoint`` last saved at (0 before any): it skips saving that step again."""
    return checkpoint._last_global_step_saved


def save_topk_and_last(checkpoint: ModelCheckpoint, trainer: Trainer) -> None:
    """Saves the top-k and the last checkpoint for the current step as ``ModelCheckpoint`` does on a multiple of
    ``every_n_train_steps``: not in a sanity check, outside ``fit``, at a step already saved, or while the
    monitored metric is missing. ``ModelCheckpoint`` has no public method that saves."""
    if checkpoint._should_skip_saving_checkpoint(trainer):
        return
    candidates = checkpoint._monitor_candidates(trainer)  # callback_metrics with epoch and step: file names
    if checkpoint.monitor is not None and checkpoint.monitor not in candidates:
        return
    checkpoint._save_topk_checkpoint(trainer, candidates)
    checkpoint._save_last_checkpoint(trainer, candidates)


def save_last_checkpoint(checkpoint: ModelCheckpoint, trainer: Trainer) -> None:
    """Writes ``checkpoint``'s ``last.ckpt`` (if ``save_last``) for the current step, as its own hooks do."""
    checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))


# --- checkpoints -----------------------------------------------------------------------------------------------

#: keys LightningCLI adds to the hyper-parameters a module or datamodule saves (``_class_path``: the class it
#: instantiated, which ``instantiate_module`` reads; ``_instantiator``: how), not arguments of the class
CLI_HPARAMS_KEYS = frozenset({"_class_path", "_instantiator"})


def saved_class_path(hparams: Mapping[str, Any]) -> str | None:
    """The class path LightningCLI stored in saved hyper-parameters, None for ones saved without the CLI."""
    return hparams.get("_class_path")


def instantiate_saved(base: type, hparams: Mapping[str, Any]) -> Any:
    """The ``base`` subclass instance that hyper-parameters saved by LightningCLI describe; ``instantiate_module``
    reads ``_class_path`` but would pass ``_instantiator`` to the class as an argument."""
    return instantiate_module(base, {k: v for k, v in hparams.items() if k != "_instantiator"})


# --- loggers ---------------------------------------------------------------------------------------------------


def started_experiment(logger: Logger) -> Any:
    """The experiment (W&B run, CSV writer) a Lightning logger has started, None if none yet; reading
    ``logger.experiment`` would start one."""
    return logger._experiment


def set_experiment(logger: Logger, experiment: Any) -> None:
    """Makes ``logger.experiment`` return ``experiment`` (None: start a new one on next use). Lightning's loggers
    take an experiment only in their constructor."""
    logger._experiment = experiment


def wandb_init_kwargs(logger: WandbLogger) -> dict[str, Any]:
    """A copy of the ``wandb.init`` arguments ``WandbLogger.__init__`` collected (name, project, dir, id,
    ``resume="allow"``, further keyword arguments)."""
    return dict(logger._wandb_init)


def wandb_attaching(logger: WandbLogger) -> bool:
    """Whether ``logger`` was unpickled in a spawned process, where ``experiment`` attaches to the parent's run
    instead of starting one."""
    return getattr(logger, "_attach_id", None) is not None


def logger_prefix(logger: Logger) -> str:
    """The ``prefix`` a Lightning logger puts before metric keys (``""``: none)."""
    return logger._prefix or ""


class KeepingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is left in place: Lightning's writer
    deletes it when constructed (in ``_check_log_dir_exists``, its only use)."""

    def _check_log_dir_exists(self) -> None:
        pass


# --- torch -----------------------------------------------------------------------------------------------------

#: the base class of every BatchNorm layer (``BatchNorm1d/2d/3d``, their lazy forms, ``SyncBatchNorm``) and of no
#: other norm; torch exports none
BatchNorm = nn.modules.batchnorm._BatchNorm


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


# --- cli -------------------------------------------------------------------------------------------------------


class ConfigOverCheckpointCLI(LightningCLI):
    """LightningCLI whose model config is not replaced by the hyper-parameters stored in ``--ckpt_path``."""

    def _parse_ckpt_path(self) -> None:
        """LightningCLI re-parses ``model`` from the checkpoint's hyper-parameters right after parsing, with no
        public switch; lit_gen's run config and command line decide the model (the CLI compares the two)."""


def parse_without_validation(parser: ArgumentParser, args: list[str] | None) -> Namespace:
    """``parser.parse_args`` without the final validation (jsonargparse's private ``_skip_validation``): a
    logger given without its required ``save_dir`` gets the run directory before the config is validated."""
    return parser.parse_args(args, _skip_validation=True)
