"""Samplers: each maps standard-normal noise to samples with a denoiser ``D(x, alpha, sigma) ~ E[data | x]`` for
x = alpha * data + sigma * noise (alpha, sigma: (B,) tensors), e.g. ``path.denoiser(net)`` of any path in
``paths.py`` or an analytic one. Each walks its own grid of (alpha, sigma) and counts the denoiser calls (network
evaluations, ``nfe``) of its last run.

A new sampler is one subclass with a ``sample(denoise, noise, rng)`` that calls ``denoise(x, alpha, sigma)``
with floats alpha, sigma.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lit_gen.diffusion.paths import alphas_cumprod

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


class Sampler:
    nfe: int = 0  # network evaluations of the last call

    def __call__(self, denoise: Denoiser, noise: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """Samples shaped like ``noise`` (standard normal, the starting point before the sampler's scaling)."""
        self.nfe = 0

        def counted(x: Tensor, alpha: float, sigma: float) -> Tensor:
            self.nfe += 1
            n = len(x)
            return denoise(x, x.new_full((n,), alpha), x.new_full((n,), sigma))

        with torch.no_grad():
            return self.sample(counted, noise, rng)

    def sample(self, denoise: Callable, noise: Tensor, rng: torch.Generator | None) -> Tensor:
        raise NotImplementedError


def edm_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """Karras et al. 2022 eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, then 0."""
    i = torch.arange(steps, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return ((a + i / (steps - 1) * (b - a)) ** rho).tolist() + [0.0]


class EDMHeun(Sampler):
    """Karras et al. 2022 Algorithm 1 (deterministic, S_churn = 0): Heun's 2nd-order method on
    dx/dsigma = (x - D(x; sigma)) / sigma, Euler on the last step to sigma = 0; 2 * steps - 1 evaluations
    (18 steps: 35)."""

    def __init__(self, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        self.steps, self.sigma_min, self.sigma_max, self.rho = steps, sigma_min, sigma_max, rho

    def sample(self, denoise, noise, rng):
        sigmas = edm_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)
        x = noise * sigmas[0]
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            d = (x - denoise(x, 1.0, s)) / s
            x_next = x + (s_next - s) * d
            if s_next > 0:
                d_next = (x_next - denoise(x_next, 1.0, s_next)) / s_next
                x_next = x + (s_next - s) * (d + d_next) / 2
            x = x_next
        return x


class DDPM(Sampler):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) through all T steps: x_{n-1} ~ q(x_{n-1} | x_n, data_hat),
    the posterior mean (eq. 7) with variance beta ("beta", Ho et al.'s CIFAR-10 sampling) or beta_tilde
    ("posterior"); no noise on the last step. ``variance="posterior"`` is DDIM with eta = 1 on all T steps.
    ``clip``: clamp data_hat to [-clip, clip] (Ho et al.'s images in [-1, 1])."""

    def __init__(
        self,
        schedule: str = "linear",
        num_timesteps: int = 1000,
        variance: str = "beta",
        clip: float | None = None,
    ):
        if variance not in ("posterior", "beta"):
            raise ValueError(f"variance: expected 'posterior' or 'beta', got {variance!r}")
        self.schedule, self.num_timesteps, self.variance, self.clip = schedule, num_timesteps, variance, clip

    def sample(self, denoise, noise, rng):
        alpha_bar = alphas_cumprod(self.schedule, self.num_timesteps).tolist()
        x = noise
        for n in reversed(range(self.num_timesteps)):
            a, a_prev = alpha_bar[n], alpha_bar[n - 1] if n > 0 else 1.0
            data_hat = denoise(x, a**0.5, (1 - a) ** 0.5)
            if self.clip is not None:
                data_hat = data_hat.clamp(-self.clip, self.clip)
            beta = 1 - a / a_prev
            mean = (a_prev**0.5 * beta * data_hat + (1 - beta) ** 0.5 * (1 - a_prev) * x) / (1 - a)
            if n == 0:
                return mean
            var = beta * (1 - a_prev) / (1 - a) if self.variance == "posterior" else beta
            x = mean + var**0.5 * torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        return x


class DDIM(Sampler):
    """Song et al. 2021 eq. 12 on ``steps`` of DDPM's T steps (evenly spaced, from T-1 down to 0):
    x_prev = sqrt(a_prev) data_hat + sqrt(1 - a_prev - s^2) eps_hat + s z,
    s = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev); eta = 0 is deterministic, eta = 1 is DDPM-like."""

    def __init__(
        self, steps: int = 50, eta: float = 0.0, schedule: str = "linear", num_timesteps: int = 1000
    ):
        self.steps, self.eta, self.schedule, self.num_timesteps = steps, eta, schedule, num_timesteps

    def sample(self, denoise, noise, rng):
        alpha_bar = alphas_cumprod(self.schedule, self.num_timesteps)
        grid = torch.linspace(self.num_timesteps - 1, 0, self.steps, dtype=torch.float64).round().long()
        levels = alpha_bar[grid.unique_consecutive()].tolist() + [1.0]
        x = noise
        for a, a_prev in zip(levels[:-1], levels[1:]):
            data_hat = denoise(x, a**0.5, (1 - a) ** 0.5)
            eps_hat = (x - a**0.5 * data_hat) / (1 - a) ** 0.5
            s = self.eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
            x = a_prev**0.5 * data_hat + max(1 - a_prev - s**2, 0.0) ** 0.5 * eps_hat
            if s > 0:
                x = x + s * torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        return x


def _flow_velocity(denoise, x: Tensor, t: float) -> Tensor:
    """Velocity of the straight path x_t = t data + (1 - t) noise: v = data_hat - noise_hat = (data_hat - x) / (1 - t)."""
    return (denoise(x, t, 1 - t) - x) / (1 - t)


class FlowEuler(Sampler):
    """Euler's method on the flow-matching ODE dx/dt = v(x, t), t = 0 (noise) to 1 (data), ``steps`` uniform steps
    (Lipman et al. 2023; Liu et al. 2023); ``steps`` evaluations."""

    def __init__(self, steps: int = 100):
        self.steps = steps

    def sample(self, denoise, noise, rng):
        ts = torch.linspace(0, 1, self.steps + 1, dtype=torch.float64).tolist()
        x = noise
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = x + (t_next - t) * _flow_velocity(denoise, x, t)
        return x


class FlowHeun(Sampler):
    """Heun's method on the flow-matching ODE, t = 0 to 1 in ``steps`` uniform steps; the last step is Euler's (the
    velocity at t = 1, the data, is not asked for), so 2 * steps - 1 evaluations."""

    def __init__(self, steps: int = 50):
        self.steps = steps

    def sample(self, denoise, noise, rng):
        ts = torch.linspace(0, 1, self.steps + 1, dtype=torch.float64).tolist()
        x = noise
        for t, t_next in zip(ts[:-1], ts[1:]):
            v = _flow_velocity(denoise, x, t)
            x_next = x + (t_next - t) * v
            if t_next < 1:
                x_next = x + (t_next - t) * (v + _flow_velocity(denoise, x_next, t_next)) / 2
            x = x_next
        return x
