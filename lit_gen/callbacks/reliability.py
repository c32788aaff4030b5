"""Exact resume and safe stopping: the checkpoint callback every ``fit`` uses, and the non-finite loss guard.

``Checkpoint`` is Lightning's ``ModelCheckpoint`` plus what a bit-exact resume and a safe stop need:

- the global RNG states of every rank (torch CPU/CUDA, NumPy, Python; Lightning does not store them) go into
  the checkpoint and are restored just before the first resumed batch; validation during ``fit`` runs on a
  forked RNG, so evaluating never shifts the training stream (an uninterrupted and a resumed run would
  otherwise differ by the validations one of them skipped);
- the checkpoint IO is ``lit_gen.checkpoints.SafeCheckpointIO``: atomic writes, ``weights_only`` loads;
- ``every_n_train_steps`` saves when the global step reaches *or passes* a multiple of N: a GAN's global step
  advances by 2 on generator-step batches, so it can step over a multiple (Lightning saves only on exact ones);
- ``last.ckpt`` always holds the final state at the end of ``fit`` (Lightning skips it when an earlier step
  was saved) and is written when the run is stopped by SIGTERM or a first Ctrl-C: both stop at the end of
  the current batch — never between the two players' steps — save, and exit with status 143 / 130. A second
  Ctrl-C interrupts at once, without saving.

``NonFiniteGuard`` stops the run when a training loss term is NaN or infinite (checked on every batch), naming
the term and the step; ``last.ckpt`` is not overwritten, so the last good checkpoint survives. With
``max_skips > 0`` an optimizer step whose gradients are not finite is skipped instead (its gradients dropped),
up to that many times.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections.abc import Mapping
from types import FrameType
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_gen._lightning import (
    end_restart_after_an_epochs_last_batch,
    last_saved_step,
    save_last_checkpoint,
    save_topk_and_last,
    stop_after_this_batch,
)
from lit_gen.checkpoints import SafeCheckpointIO, rng_states, set_rng_states
from lit_gen.errors import LitGenError

#: checkpoint key of the per-rank RNG states
RNG_KEY = "rng_states"


class NonFiniteLossError(LitGenError):
    """A training loss became NaN or infinite."""


def _gather(trainer: Trainer, obj: Any) -> list[Any]:
    """``obj`` from every rank (a list of one outside DDP)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered
    return [obj]


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that also makes resume bit-exact and stopping safe; see the module
    docstring. The CLI's ``--checkpoint.*`` options configure it."""

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, every_n_train_steps=every_n_train_steps, **kwargs)
        self._every_n_steps = every_n_train_steps or 0
        self._step_at_batch_start = 0
        self._rng_to_restore: dict[str, Any] | None = None
        self._validation_rng: dict[str, Any] | None = None
        self._stop_signal: int | None = None
        self._previous_sigint = None

    # --- checkpoint IO -------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = SafeCheckpointIO()

    # --- RNG states ----------------------------------------------------------------------------------------

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = _gather(trainer, self._validation_rng or rng_states())

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get(RNG_KEY)
        if not states:
            return
        if len(states) != trainer.world_size:
            warnings.warn(
                f"the checkpoint holds RNG states of {len(states)} processes, this run has "
                f"{trainer.world_size}: the random streams do not continue exactly",
                stacklevel=2,
            )
        self._rng_to_restore = states[trainer.global_rank % len(states)]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        end_restart_after_an_epochs_last_batch(trainer)
        # after the sanity check and the first (pre-fetched) batch: nothing else draws before the step
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        self._install_sigint_handler(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._validation_rng = rng_states()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._validation_rng is not None:
            set_rng_states(self._validation_rng)
            self._validation_rng = None

    # --- saving --------------------------------------------------------------------------------------------

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with warnings.catch_warnings():
            # Lightning warns that manual optimization saves the state *after* the optimizer steps: that
            # is the state a resumed run must start from
            warnings.filterwarnings("ignore", message=".*pre-optimization state.*")
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n, step = self._every_n_steps, trainer.global_step
        # Lightning saved if step is a multiple of n; this batch may also have stepped over one
        if n >= 1 and step % n != 0 and step // n > self._step_at_batch_start // n:
            self.save_now(trainer)
        # the final batch: save here, not in on_train_end, where Lightning has already counted the cut-short
        # epoch as complete (a run resumed from there would start the next epoch early)
        if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
            self.save_last_now(trainer)

    def save_now(self, trainer: Trainer) -> None:
        """Saves the top-k and last checkpoints for the current step, as Lightning does on a multiple of
        ``every_n_train_steps`` (not while the monitored metric is missing)."""
        save_topk_and_last(self, trainer)

    def save_last_now(self, trainer: Trainer) -> None:
        """Writes ``last.ckpt`` for the current step unless it was just written."""
        if self.save_last and last_saved_step(self) != trainer.global_step and not trainer.fast_dev_run:
            save_last_checkpoint(self, trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.save_last_now(trainer)
        super().on_train_end(trainer, pl_module)

    # --- stopping ------------------------------------------------------------------------------------------

    def _install_sigint_handler(self, trainer: Trainer) -> None:
        def on_sigint(signum: int, frame: FrameType | None) -> None:
            if self._stop_signal is not None:  # second Ctrl-C: stop now
                signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
                raise KeyboardInterrupt
            self._stop_signal = signum
            stop_after_this_batch(trainer)
            if trainer.is_global_zero:
                print(
                    "\nlit_gen: stopping after this batch and saving a checkpoint (Ctrl-C again to abort)",
                    file=sys.stderr,
                )

        try:
            self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            self._previous_sigint = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return  # errors (e.g. a non-finite loss) keep the last good checkpoint untouched
        self.save_last_now(trainer)
        signum = self._stop_signal or signal.SIGTERM
        exception.code = 128 + int(signum)
        if trainer.is_global_zero:
            name = signal.Signals(signum).name
            print(
                f"lit_gen: stopped by {name} at global step {trainer.global_step}; saved {self.last_model_path}."
                f" Resume with: python -m lit_gen fit --config {trainer.default_root_dir}/config.yaml"
                " --ckpt_path last",
                file=sys.stderr,
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_sigint is not None:
            try:
                signal.signal(signal.SIGINT, self._previous_sigint)
            except ValueError:
                pass
            self._previous_sigint = None


class NonFiniteGuard(Callback):
    """Stops training when a training loss term is NaN or infinite, checked on every batch.

    The terms are the ``train/*`` tensors the training step returns (the GAN returns its losses there, as it
    logs only on logging batches); for a model whose step returns none, the ``train/*`` values it logged
    (``trainer.callback_metrics``).

    The error names the batch, the global step and the terms; the checkpoint callback runs after this one
    and is not reached, so ``last.ckpt`` keeps the last good state. Under DDP the ranks decide together.

    Args:
        max_skips: when positive, an optimizer step whose gradients are not all finite is skipped (its
            gradients are dropped before the step; under DDP they are already averaged, so every rank skips)
            and counted (``train/skipped_steps``); the run stops when more than ``max_skips`` were skipped.
            Under ``16-mixed`` the GradScaler already skips overflowing steps and lowers its scale (normal
            while it calibrates), so gradients are not checked here; a non-finite loss still stops the run.
    """

    def __init__(self, max_skips: int = 0) -> None:
        if max_skips < 0:
            raise LitGenError(f"nonfinite.max_skips must be >= 0, got {max_skips}")
        self.max_skips = max_skips
        self.skipped = 0
        self._skipped_this_batch = False

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if self.max_skips == 0 or getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # under 16-mixed the GradScaler skips (and does not count) overflowing steps itself
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        self._skipped_this_batch = True
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(
                f"nonfinite.max_skips: {self.skipped} optimizer steps had non-finite gradients (at global step "
                f"{trainer.global_step}), more than the {self.max_skips} allowed"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        terms = self.loss_terms(trainer, outputs)
        # one host-device sync per batch for all terms (and one all-reduce under DDP)
        finite = bool(torch.stack([torch.isfinite(v).all() for v in terms.values()]).all()) if terms else True
        bad_anywhere = trainer.strategy.reduce_boolean_decision(not finite, all=False)
        skipped, self._skipped_this_batch = self._skipped_this_batch, False
        if self.max_skips > 0:
            pl_module.log("train/skipped_steps", float(self.skipped), rank_zero_only=True)
        if bad_anywhere and not skipped:
            bad = sorted(key for key, value in terms.items() if not bool(torch.isfinite(value).all()))
            where = ", ".join(bad) if bad else "a loss term on another rank"
            last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none yet"
            raise NonFiniteLossError(
                f"non-finite training loss at batch {batch_idx} of epoch {trainer.current_epoch} "
                f"(global step {trainer.global_step}): {where}; last good checkpoint: {last}"
            )

    @staticmethod
    def loss_terms(trainer: Trainer, outputs: Any) -> dict[str, torch.Tensor]:
        """The batch's loss terms: the ``train/*`` floating-point tensors in the training step's output, else
        those in ``trainer.callback_metrics``."""

        def floats(items) -> dict[str, torch.Tensor]:
            return {
                key: value
                for key, value in items
                if key.startswith("train/") and isinstance(value, torch.Tensor) and value.is_floating_point()
            }

        if isinstance(outputs, Mapping):
            terms = floats(outputs.items())
            if terms:
                return terms
        return floats(trainer.callback_metrics.items())
