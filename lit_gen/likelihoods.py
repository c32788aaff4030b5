"""Decoder likelihoods p(x | z) of the VAE family, chosen in the config (``model.init_args.likelihood``).

``Bernoulli`` (binarized images, with dynamic binarization resampled every batch), ``Gaussian`` (fixed or
learned variance) or ``DiscretizedLogistic`` (8-bit images). Each one says how many decoder outputs per pixel
it reads (``params_per_pixel``) and whether its log-probabilities are of discrete data (``discrete``: then NLL
and bits/dim are code lengths).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_gen.errors import LitGenError
from lit_gen.losses import bernoulli_log_prob, discretized_logistic_log_prob, gaussian_image_log_prob


class Likelihood:
    """p(x | z) given the decoder's output ``params`` (N, params_per_pixel * C, H, W).

    ``discrete``: whether ``log_prob`` is a probability of discrete data (so NLL and bits/dim are code
    lengths) rather than a density.
    """

    params_per_pixel: int = 1
    discrete: bool = True

    def prepare(self, x: Tensor, rng: torch.Generator | None = None, uniform: Tensor | None = None) -> Tensor:
        """The data the model is trained on / scored on, from images in [0, 1] (e.g. a binarization); its noise
        is ``uniform`` (U[0, 1) shaped like x) when given, else drawn from ``rng``."""
        return x

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | z) per example (N,)."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[x | z] clamped to [0, 1], for display and ``generate``."""
        raise NotImplementedError

    def split(self, params: Tensor) -> tuple[Tensor, ...]:
        """The ``params_per_pixel`` parameter maps, each (N, C, H, W)."""
        return params.unflatten(1, (self.params_per_pixel, -1)).unbind(1)


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder.

    Args:
        binarize: sample x ~ Bernoulli(intensity) afresh every batch (dynamic binarization, Burda et al.
            2015); validation/test batches are binarized with the same seeds every time. False trains on the
            grey levels directly (a cross-entropy loss, not a normalised likelihood).
    """

    params_per_pixel = 1

    def __init__(self, binarize: bool = True) -> None:
        self.binarize = binarize
        self.discrete = binarize

    def prepare(self, x: Tensor, rng: torch.Generator | None = None, uniform: Tensor | None = None) -> Tensor:
        return dynamic_binarization(x, rng, uniform) if self.binarize else x

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return bernoulli_log_prob(x, params)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


def dynamic_binarization(
    x: Tensor, rng: torch.Generator | None = None, uniform: Tensor | None = None
) -> Tensor:
    """x ~ Bernoulli(intensity) per pixel: ``uniform < x``, with ``uniform`` ~ U[0, 1) shaped like x given or
    drawn from ``rng`` (created on x's device)."""
    if uniform is None:
        uniform = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
    return (uniform < x).to(x.dtype)


class Gaussian(Likelihood):
    """Independent Gaussian pixels: the decoder gives the mean (and the log-variance when learned).

    Args:
        learned_variance: the decoder also outputs a per-pixel log-variance (Kingma & Welling 2014, Frey faces);
            otherwise the standard deviation is ``std``.
        std: the fixed standard deviation.
        min_log_var: lower clamp of a learned log-variance (keeps the density bounded).
    """

    discrete = False

    def __init__(self, learned_variance: bool = True, std: float = 1.0, min_log_var: float = -9.0) -> None:
        if std <= 0:
            raise LitGenError(f"model.likelihood.std must be positive, got {std}")
        self.learned_variance, self.std, self.min_log_var = learned_variance, std, min_log_var
        self.params_per_pixel = 2 if learned_variance else 1

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        if self.learned_variance:
            mean, log_var = self.split(params)
            log_var = log_var.clamp(min=self.min_log_var)
        else:
            mean = params
            log_var = torch.full(
                (1,) * mean.dim(), 2.0 * math.log(self.std), device=mean.device, dtype=mean.dtype
            )
        return gaussian_image_log_prob(x, mean, log_var)

    def mean(self, params: Tensor) -> Tensor:
        return self.split(params)[0].clamp(0.0, 1.0)


class DiscretizedLogistic(Likelihood):
    """8-bit pixels: a logistic (mean, log-scale from the decoder) discretized into ``bins`` values
    (Salimans et al. 2017, one mixture component). Log-likelihoods are of the discrete pixel values, so
    bits/dim are comparable with other 8-bit likelihood models.
    """

    params_per_pixel = 2

    def __init__(self, bins: int = 256, min_log_scale: float = -7.0) -> None:
        if bins < 2:
            raise LitGenError(f"model.likelihood.bins must be >= 2, got {bins}")
        self.bins, self.min_log_scale = bins, min_log_scale

    def prepare(self, x: Tensor, rng: torch.Generator | None = None, uniform: Tensor | None = None) -> Tensor:
        return torch.round(x.clamp(0.0, 1.0) * (self.bins - 1)) / (self.bins - 1)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mean, log_scale = self.split(params)
        return discretized_logistic_log_prob(x, mean, log_scale.clamp(min=self.min_log_scale), self.bins)

    def mean(self, params: Tensor) -> Tensor:
        return self.split(params)[0].clamp(0.0, 1.0)
