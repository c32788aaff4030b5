"""Test-only callback (imported by SLURM jobs through PYTHONPATH): holds a fit at one batch so that a test can
preempt it at a known point while it trains."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback

from lit_gen.callbacks import SLURMRequeue, batches_done


class Gate(Callback):
    """At the end of training batch ``at_batch``: writes ``<run dir>/gate_reached`` and waits until the file
    ``<run dir>/release`` exists or SLURM's requeue signal has arrived (at most ``timeout`` seconds). Changes no
    number, so a gated run trains exactly like an ungated one."""

    def __init__(self, at_batch: int = 20, timeout: float = 120.0) -> None:
        self.at_batch, self.timeout = at_batch, timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batches_done(trainer) != self.at_batch:
            return
        run_dir = Path(trainer.default_root_dir)
        (run_dir / "gate_reached").touch()
        requeue = [cb for cb in trainer.callbacks if isinstance(cb, SLURMRequeue)]
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if (run_dir / "release").exists() or any(cb._requested for cb in requeue):
                return
            time.sleep(0.05)
