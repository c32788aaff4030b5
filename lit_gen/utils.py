"""Helpers every layer may use (data, nets, models, metrics, callbacks): they import only torch and NumPy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. base seed, rank, step, stream); same inputs, same seed."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1
    )


def batch_data(batch):
    """The data of a DataLoader batch: the first element of a (data, labels) pair, else the batch itself."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts modules in eval mode under ``torch.no_grad`` and restores each one's previous mode afterwards."""
    previous = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, was_training in zip(modules, previous):
            m.train(was_training)


def rng_on(rng: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``rng`` itself when it lives on ``device`` (or is None); otherwise a generator on ``device`` seeded from it,
    so that a CPU generator can drive draws made on an accelerator."""
    if rng is None or rng.device.type == torch.device(device).type:
        return rng
    return torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (), generator=rng)))
