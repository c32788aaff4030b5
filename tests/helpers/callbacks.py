"""Callbacks the test configs name by class path (``helpers.callbacks.Gate``), in-process and in subprocesses.

Subprocesses and SLURM jobs import them through the PYTHONPATH of ``runners.subprocess_env`` (``tests/``)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback

from lit_gen.callbacks import SLURMRequeue, batches_done


class DrawsGlobalRandom(Callback):
    """Stands for any user of the global RNGs in training (dropout, augmentation in the main process)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.rand(3), np.random.rand(3), random.random()


class FailAtTrainEnd(Callback):
    """Fails a fit after its last batch (and so after the final ``last.ckpt``), as a late crash would."""

    def on_train_end(self, trainer, pl_module) -> None:
        raise RuntimeError("failed at the end of training")


class SignalAtBatchStart(Callback):
    """Sends this process ``signum`` as training batch ``batch`` (0-based, over all epochs) starts."""

    def __init__(self, batch: int, signum: int = 15) -> None:  # SIGTERM
        self.batch, self.signum = batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1 == self.batch:
            os.kill(os.getpid(), self.signum)


class SignalMidBatch(Callback):
    """Sends this process ``signal`` just before the first optimizer step of training batch ``batch`` (counted
    from 1): mid-batch, where a GAN has stepped neither player yet."""

    def __init__(self, batch: int = 5, signal: int = 10) -> None:
        self.batch, self.signal = batch, signal

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if batches_done(trainer) == self.batch - 1 and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), self.signal)


class Gate(Callback):
    """At the end of training batch ``at_batch``: writes ``<run dir>/gate_reached`` and waits until the file
    ``<run dir>/release`` exists or SLURM's requeue signal has arrived (at most ``timeout`` seconds), so that a
    test can preempt a SLURM job at a known point while it trains. Changes no number, so a gated run trains
    exactly like an ungated one."""

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


class PoisonFirstParameter(Callback):
    """Fills the model's first parameter with NaN as training batch ``batch`` starts (any family)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1 == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class RecordsTrainingNoise(Callback):
    """Records what a ``Diffusion`` module draws in training and saves it at the end of fit, per rank, to
    ``<run dir>/noise-rank<r>.pt``: ``{"streams": {stream: [each batch's draw]}, "couplings": [(data, noise,
    coupled noise) of each batch]}`` (``batch_noise`` and ``path.couple`` wrapped; no number changes)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        self.streams: dict[int, list[torch.Tensor]] = {}
        self.couplings: list[tuple[torch.Tensor, ...]] = []
        batch_noise, couple = pl_module.batch_noise, pl_module.path.couple

        def recorded_batch_noise(stream, *args, **kwargs):
            values = batch_noise(stream, *args, **kwargs)
            self.streams.setdefault(int(stream), []).append(values.detach().clone())
            return values

        def recorded_couple(data, noise):
            coupled = couple(data, noise)
            self.couplings.append((data.detach().clone(), noise.clone(), coupled.clone()))
            return coupled

        pl_module.batch_noise, pl_module.path.couple = recorded_batch_noise, recorded_couple

    def on_fit_end(self, trainer, pl_module) -> None:
        del pl_module.batch_noise, pl_module.path.couple  # the class's methods again
        path = Path(trainer.default_root_dir) / f"noise-rank{trainer.global_rank}.pt"
        torch.save({"streams": self.streams, "couplings": self.couplings}, path)
