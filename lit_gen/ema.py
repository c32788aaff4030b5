"""An exponential moving average of a network's weights: what every family samples and evaluates with."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from lit_gen._lightning import BatchNorm


def batch_norms(net: nn.Module) -> list[BatchNorm]:
    """The BatchNorm layers of ``net`` that keep running statistics."""
    return [m for m in net.modules() if isinstance(m, BatchNorm) and m.track_running_stats]


class EMA(AveragedModel):
    """The averaged copy (``module``) of a network and the number of updates averaged (``n_averaged``), as
    ``torch.optim.swa_utils.AveragedModel`` keeps them, so checkpoints hold ``<name>.module.*`` and
    ``<name>.n_averaged``.

    Args:
        net: the live network; its weights are copied at construction and at the first ``update``.
        decay: the decay once the ramp-up is over (SN-GAN / BigGAN 0.9999, DDPM 0.9999, EDM's half-life).
        rampup: ramps the half-life up with training (StyleGAN2-ADA's ``ema_rampup``): at update ``t`` the
            half-life is ``min(h, rampup * t)`` updates, ``h`` that of ``decay``, so that early samples are not
            dominated by the random initialisation. ``None`` uses ``decay`` from the first update.
    """

    def __init__(self, net: nn.Module, decay: float, rampup: float | None = 0.05) -> None:
        super().__init__(net, use_buffers=False)
        self.decay, self.rampup = decay, rampup
        self.requires_grad_(False)
        # whether the BatchNorm statistics belong to older weights (see recompute_statistics)
        self.statistics_stale = True

    def decay_at(self, updates: int) -> float:
        """The decay of update number ``updates + 1`` (``updates`` updates averaged before it)."""
        if self.rampup is None:
            return 0.0 if updates == 0 else self.decay
        half_life = self.rampup * updates
        if half_life <= 0.0:
            return 0.0
        # decay**h == 1/2: a shorter half-life than decay's is a smaller decay
        return min(self.decay, 0.5 ** (1.0 / half_life))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One EMA step towards ``net``'s parameters. Buffers other than BatchNorm statistics (e.g. spectral
        norm's power-iteration vectors) are copied from ``net``; BatchNorm statistics are recomputed for the
        averaged weights before they are next used (``recompute_statistics``): neither ``net``'s nor averaged
        ones belong to averaged weights."""
        decay = self.decay_at(int(self.n_averaged))
        for ema_p, p in zip(self.module.parameters(), net.parameters()):
            if decay == 0.0:
                ema_p.copy_(p)
            else:
                ema_p.lerp_(p.detach(), 1.0 - decay)
        norm_buffers = {id(b) for m in batch_norms(self.module) for b in m.buffers()}
        for ema_b, b in zip(self.module.buffers(), net.buffers()):
            if id(ema_b) not in norm_buffers:
                ema_b.copy_(b)
        self.n_averaged += 1
        self.statistics_stale = True

    @torch.no_grad()
    def recompute_statistics(
        self, inputs: Callable[[torch.Generator], Tensor], seed: int, passes: int
    ) -> None:
        """Recomputes the BatchNorm running statistics for the current averaged weights, when they changed since
        the last time: the average over ``passes`` training-mode forward passes of ``inputs(rng)``, ``rng`` a CPU
        generator seeded with ``seed`` (no global RNG is touched)."""
        if not self.statistics_stale:
            return
        norms = batch_norms(self.module)
        if norms:
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the passes
            rng = torch.Generator().manual_seed(seed)
            was_training = self.module.training
            self.module.train()
            for _ in range(passes):
                self.module(inputs(rng))
            self.module.train(was_training)
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        self.statistics_stale = False
