"""A callback that measures steady-state training throughput (samples/s over all processes) and writes it to
``<run dir>/throughput.json``; used by ``run.py`` through ``--trainer.callbacks+=...``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch import Callback

from lit_gen._lightning import batches_done
from lit_gen.utils import batch_data


class Throughput(Callback):
    """Times training batches ``warmup`` .. the last one on rank 0 (DDP ranks run in lock-step).

    Args:
        warmup: batches excluded from the measurement (start-up, allocator warm-up, DDP bucket building).
    """

    def __init__(self, warmup: int = 10) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.batches = 0
        self.samples = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = batches_done(trainer)
        if done == self.warmup:
            self.start = time.perf_counter()
        elif done > self.warmup:
            self.batches += 1
            self.samples += int(batch_data(batch).shape[0]) * trainer.world_size
            self.end = (
                time.perf_counter()
            )  # not on_train_end: other callbacks' end-of-fit work is not training

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.start is not None and self.batches:
            seconds = self.end - self.start
            result = {
                "processes": trainer.world_size,
                "batches": self.batches,
                "seconds": seconds,
                "samples_per_sec": self.samples / seconds,
                "batches_per_sec": self.batches / seconds,
            }
            (Path(trainer.default_root_dir) / "throughput.json").write_text(json.dumps(result))
