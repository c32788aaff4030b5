"""The progress bar ``fit`` shows: Lightning's TQDM bar, redrawn at most every ``min_interval`` seconds."""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar``, redrawn at most every ``min_interval`` seconds (and on each bar's last
    batch), once per redraw. Lightning's bar redraws twice (count, then metrics) on every ``refresh_rate``-th
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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total):
            if not bar.disable:
                bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # the one redraw
