"""The progress bar ``fit`` shows: Lightning's TQDM bar, redrawn at most every ``min_interval`` seconds, with the
run's overall progress and time left."""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import TQDMProgressBar

from lit_gen._lightning import epoch_batches_done


class ProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar``, redrawn at most every ``min_interval`` seconds (and on each bar's last
    batch), once per redraw, and describing the whole run, not only the epoch: ``Epoch 3 [step 1200/4000,
    ETA 2:31]`` (the ETA from the speed since this ``fit`` started). Lightning's bar redraws twice (count, then metrics) on every ``refresh_rate``-th
    batch, and a redraw is not free: ~0.7 ms of CPU, ~2.5 ms while W&B captures the console (measured on a
    2-core CPU), so on every batch it costs more than a toy model's training step (a few ms). Twice a second it
    costs < 0.5 % of the CPU.

    ``python -m lit_gen fit`` uses it unless the config adds a progress bar callback of its own (e.g.
    Lightning's ``TQDMProgressBar``, to redraw on every batch) or sets ``trainer.enable_progress_bar: false``.

    Args:
        refresh_rate: redraw at most every this many batches (0: no bar), as in ``TQDMProgressBar``.
        process_position, leave: as in ``TQDMProgressBar``.
        min_interval: seconds between two redraws; 0 redraws on every ``refresh_rate``-th batch.
    """

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False, min_interval: float = 0.5
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._last_redraw = -math.inf
        self._start: tuple[float, float] | None = (
            None  # (time, fraction of the run done) when training started
        )

    @property
    def total_train_batches(self) -> int | float:
        # Lightning caps an epoch's bar at max_steps - global_step, i.e. at optimizer steps; a GAN makes up to two
        # of them a batch, so its last epoch's bar ended half full. The module converts steps to batches.
        trainer, module = self.trainer, self.trainer.lightning_module
        if (
            trainer.max_steps is None
            or trainer.max_steps < 0
            or not hasattr(module, "batches_for_optimizer_steps")
        ):
            return super().total_train_batches
        remaining = module.batches_for_optimizer_steps(trainer.max_steps - trainer.global_step)
        return min(trainer.num_training_batches, remaining)

    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current != total and now - self._last_redraw < self.min_interval:
            return False
        self._last_redraw = now
        return True

    def fraction_done(self, trainer) -> float | None:
        """How much of the run is done: steps out of ``max_steps``, else epochs out of ``max_epochs``."""
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return min(1.0, trainer.global_step / trainer.max_steps)
        batches = trainer.num_training_batches
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and 0 < batches < math.inf:
            done = epoch_batches_done(trainer)
            return min(1.0, (trainer.current_epoch + done / batches) / trainer.max_epochs)
        return None

    def describe(self, trainer) -> str:
        """The bar's description: the epoch, the run's progress and its ETA."""
        text = f"Epoch {trainer.current_epoch}"
        done = self.fraction_done(trainer)
        if done is None:
            return text
        if trainer.max_steps is not None and trainer.max_steps > 0:
            progress = f"step {trainer.global_step}/{trainer.max_steps}"
        else:
            progress = f"{done:.0%} of {trainer.max_epochs} epochs"
        eta = "?"
        if self._start is not None and done > self._start[1]:
            seconds = (time.monotonic() - self._start[0]) * (1 - done) / (done - self._start[1])
            minutes, seconds = divmod(round(seconds), 60)
            hours, minutes = divmod(minutes, 60)
            eta = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
        return f"{text} [{progress}, ETA {eta}]"

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: the run directory says which run this is
        return metrics

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = (time.monotonic(), self.fraction_done(trainer) or 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total):
            if not bar.disable:
                bar.n = n
            bar.set_description(self.describe(trainer), refresh=False)
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # the one redraw
