"""Preemption on SLURM: Lightning's auto-requeue, with its checkpoint taken between two training batches."""

from __future__ import annotations

import signal
import time
from types import FrameType

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lit_gen._lightning import cluster_environment, slurm_save_and_requeue


class SLURMRequeue(Callback):
    """Runs Lightning's SLURM save-and-requeue at the end of a training batch instead of inside the signal.

    Under SLURM, Lightning's ``SLURMEnvironment(auto_requeue=True)`` answers the requeue signal (``USR1``,
    sent ``--signal=SIGUSR1@90`` seconds before the time limit, on preemption, or by ``scancel -s USR1``)
    by saving ``hpc_ckpt_N.ckpt`` into ``trainer.default_root_dir`` — the run directory — and calling
    ``scontrol requeue``; the restarted job finds that checkpoint and resumes from it. Lightning does this
    inside the signal handler, i.e. wherever the signal interrupts Python: in a GAN possibly after the
    discriminator's optimizer step and before the generator's, a state no uninterrupted run passes through.

    This callback installs the handler before Lightning does (Lightning then keeps it instead of its own),
    only records the signal, and calls Lightning's own save-and-requeue at the end of the current training
    batch — the point at which ``ModelCheckpoint`` saves too, so the resumed run continues exactly where
    an uninterrupted one would be. Under DDP the ranks decide together, so all of them save at the same
    batch. It then waits for the SIGTERM with which SLURM stops a requeued job (at most ``sigterm_timeout``
    seconds), so nothing is trained or saved after the checkpoint the restarted job resumes from. Outside
    SLURM, or with ``auto_requeue=False``, it does nothing.
    """

    def __init__(self, sigterm_timeout: float = 60.0) -> None:
        self.sigterm_timeout = sigterm_timeout
        self._requested = False
        self._signum: signal.Signals | None = None
        self._previous_handler = None

    @staticmethod
    def _environment(trainer: Trainer) -> SLURMEnvironment | None:
        environment = cluster_environment(trainer)
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return environment
        return None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        environment = self._environment(trainer)
        if stage != "fit" or environment is None or environment.requeue_signal is None:
            return
        self._signum = environment.requeue_signal
        self._requested = False
        self._previous_handler = signal.signal(self._signum, self._on_signal)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx
    ) -> None:
        if self._signum is None:
            return
        if trainer.strategy.reduce_boolean_decision(self._requested, all=False):
            self._requested = False
            slurm_save_and_requeue(trainer, self._signum)
            self._wait_for_sigterm(trainer)

    def _wait_for_sigterm(self, trainer: Trainer) -> None:
        """Trains no further than the checkpoint: a requeued job gets SIGTERM from SLURM within seconds, and
        Lightning then stops at the next batch. Training continues only if it never comes (requeue failed)."""
        deadline = time.monotonic() + self.sigterm_timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)
        if not trainer.received_sigterm:
            rank_zero_warn(
                f"SLURM did not stop the job {self.sigterm_timeout:.0f}s after requeueing it; training on"
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous_handler or signal.SIG_DFL)
            self._signum = None
