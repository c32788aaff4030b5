"""Classifier-free guidance (Ho & Salimans 2022).

Convention here: the guided estimate is ``uncond + w * (cond - uncond)``, so w = 0 is the unconditional model, w = 1
the conditional model alone and w > 1 guides beyond it. Ho & Salimans write (1 + w') cond - w' uncond: their
w' = w - 1. The combination is the same whether applied to noise predictions (as in the paper) or to denoised
outputs (as here): for a fixed x the two are affine in each other with coefficients that sum to 1.

Training drops labels to a null class (index ``num_classes``: the class embedding has num_classes + 1 rows) with
probability p_uncond (the paper's 0.1 or 0.2), so one net learns both models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def guide(cond: Tensor, uncond: Tensor, weight: float) -> Tensor:
    """uncond + weight * (cond - uncond)."""
    return uncond + weight * (cond - uncond)


def drop_labels(
    labels: Tensor, p_uncond: float, null_class: int, rng: torch.Generator | None = None
) -> Tensor:
    """``labels`` with each replaced by ``null_class`` with probability ``p_uncond``."""
    drop = torch.rand(labels.shape, generator=rng, device=labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, null_class), labels)


class GuidedDenoiser:
    """D(x, alpha, sigma) = D_u + w (D_c - D_u) from ``denoise(x, alpha, sigma, labels=...)`` (e.g.
    ``path.denoiser(net)``), both in one call on the doubled batch (one network evaluation for the samplers' NFE);
    w = 0 and w = 1 call it once, on the null or the given labels."""

    def __init__(
        self, denoise: Callable[..., Tensor], labels: Tensor, weight: float, null_class: int
    ) -> None:
        self.denoise, self.labels, self.weight = denoise, labels, weight
        self.null = torch.full_like(labels, null_class)

    def __call__(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if self.weight == 0:
            return self.denoise(x, alpha, sigma, labels=self.null)
        if self.weight == 1:
            return self.denoise(x, alpha, sigma, labels=self.labels)
        both = self.denoise(
            torch.cat([x, x]),
            torch.cat([alpha, alpha]),
            torch.cat([sigma, sigma]),
            labels=torch.cat([self.labels, self.null]),
        )
        cond, uncond = both.chunk(2)
        return guide(cond, uncond, self.weight)
