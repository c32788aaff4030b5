"""Gaussian paths x_t = alpha(t) * data + sigma(t) * noise, one class per parameterisation.

Every path answers the same questions, so one training step serves them all::

    t = path.sample_training_noise_level(batch, rng)
    noise = path.couple(data, torch.randn_like(data))  # identity, or minibatch OT for FlowMatching(ot=True)
    x_t = path.noisy(data, noise, t)
    loss = path.loss(net(*path.model_input(x_t, t), labels=labels), data, noise, t).mean()

and ``path.denoiser(net)`` turns a net trained on the path into the path-free denoiser
``D(x, alpha, sigma) = E[data | x]`` for x = alpha * data + sigma * noise that every sampler in ``samplers.py``
calls: the path finds its own time t with sigma(t) / alpha(t) = sigma / alpha (the same signal-to-noise ratio) and
rescales x to its own alpha(t), as Karras et al. 2022 (EDM, section 2 and Table 1) do with s(t) and sigma(t). So
any sampler runs any path's net.

Time runs the path's own way: EDM's t is sigma (noise grows with t), VP's t is DDPM's step index 0..T-1 (noise
grows), FlowMatching's t is in [0, 1] with t = 0 pure noise and t = 1 data (Lipman et al. 2023's convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

Generator = torch.Generator | None

if TYPE_CHECKING:
    from lit_gen.diffusion.samplers import Sampler


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts over the non-batch dimensions of ``like``."""
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _mean_per_sample(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)


class GaussianPath:
    """The common interface. Subclasses define alpha, sigma, time_of, the training noise levels and the target."""

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def time_of(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The path's time whose sigma(t) / alpha(t) equals sigma / alpha, clamped to the path's range."""
        raise NotImplementedError

    def sample_training_noise_level(self, n: int, rng: Generator = None, device=None) -> Tensor:
        raise NotImplementedError

    def target(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the net's output regresses onto."""
        raise NotImplementedError

    def denoised(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The data estimate from the net's output."""
        raise NotImplementedError

    def couple(self, data: Tensor, noise: Tensor) -> Tensor:
        """The noise paired with each data point (independent by default)."""
        return noise

    def noisy(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return _per_sample(self.alpha(t), data) * data + _per_sample(self.sigma(t), data) * noise

    def model_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(input, time) the net is called with."""
        return x_t, t

    def loss_weight(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def loss(self, model_output: Tensor, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Per-sample weighted squared error, shape (B,): weight(t) * mean over dims of (output - target)^2."""
        error = _mean_per_sample((model_output - self.target(data, noise, t)) ** 2)
        return self.loss_weight(t).to(error) * error

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha'(t), sigma'(t))."""
        raise NotImplementedError

    def velocity(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """dx_t/dt of the probability-flow ODE in the path's time: alpha'(t) data_hat + sigma'(t) noise_hat
        (the conditional path's velocity at the posterior means; Lipman et al. 2023 Theorem 1)."""
        data_hat = self.denoised(model_output, x_t, t)
        alpha, sigma = _per_sample(self.alpha(t), x_t), _per_sample(self.sigma(t), x_t)
        noise_hat = (x_t - alpha * data_hat) / sigma
        d_alpha, d_sigma = self.derivatives(t)
        return _per_sample(d_alpha, x_t) * data_hat + _per_sample(d_sigma, x_t) * noise_hat

    def velocity_fn(self, net: Callable[..., Tensor], **net_kwargs) -> Callable[[Tensor, Tensor], Tensor]:
        """v(x_t, t) in the path's own time, for ``likelihood.ode_log_likelihood``."""

        def velocity(x_t: Tensor, t: Tensor) -> Tensor:
            return self.velocity(net(*self.model_input(x_t, t), **net_kwargs), x_t, t)

        return velocity

    def ode_span(self) -> tuple[float, float, float]:
        """(t_data, t_noise, prior_std) of the probability-flow ODE likelihood: the times of its data and noise
        ends, and the std of the zero-mean Gaussian taken as the distribution of x at t_noise."""
        raise NotImplementedError

    def ode_time(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(t(u), dt/du): the likelihood's ODE runs in u from 0 (data) to 1 (noise) on the path's time t(u),
        linear between the ends of ``ode_span`` unless a path spaces its steps otherwise."""
        t_data, t_noise, _ = self.ode_span()
        return t_data + u * (t_noise - t_data), torch.full_like(u, t_noise - t_data)

    def default_sampler(self) -> Sampler:
        """The sampler of the path's paper, used when none is configured."""
        raise NotImplementedError

    def denoiser(self, net: Callable[..., Tensor], **net_kwargs) -> Callable[..., Tensor]:
        """D(x, alpha, sigma, **kwargs) ~ E[data | x = alpha data + sigma noise]; kwargs (labels) go to the net."""

        def denoise(x: Tensor, alpha: Tensor, sigma: Tensor, **kwargs) -> Tensor:
            t = self.time_of(alpha, sigma)
            # x * sigma(t) / sigma (not alpha(t) / alpha): also right at pure noise, alpha = 0
            x_t = x * _per_sample(self.sigma(t) / sigma, x)
            return self.denoised(net(*self.model_input(x_t, t), **net_kwargs, **kwargs), x_t, t)

        return denoise


class EDM(GaussianPath):
    """Karras et al. 2022, Table 1 "Ours": x = data + sigma noise (t = sigma), a net F preconditioned as

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), c_skip = sd^2 / (sigma^2 + sd^2),
    c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4,
    ln sigma ~ N(P_mean, P_std^2) in training, loss lambda(sigma) |D - data|^2, lambda = (sigma^2 + sd^2) / (sigma sd)^2.

    ``sigma_max`` clamps the noise levels other samplers ask for (pure noise, alpha = 0, would be sigma = inf);
    ``sigma_min`` and ``sigma_max`` bound the likelihood's ODE (sigma = 0 is outside the net's c_noise = ln(sigma)).
    """

    def __init__(
        self,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_max: float = 80.0,
        sigma_min: float = 0.002,
    ) -> None:
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.sigma_max, self.sigma_min = sigma_max, sigma_min

    def ode_span(self) -> tuple[float, float, float]:
        return self.sigma_min, self.sigma_max, self.sigma_max

    def ode_time(self, u: Tensor, rho: float = 7.0) -> tuple[Tensor, Tensor]:
        """sigma(u) = (smin^(1/rho) + u (smax^(1/rho) - smin^(1/rho)))^rho, the spacing of EDM's sampler (eq. 5):
        uniform steps in sigma would leave the low-noise end, where the density sharpens, to one step."""
        a, b = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)
        base = a + u * (b - a)
        return base**rho, rho * base ** (rho - 1) * (b - a)

    def default_sampler(self) -> Sampler:
        """EDM's Heun sampler, 18 steps (35 NFE)."""
        from lit_gen.diffusion.samplers import EDMHeun

        return EDMHeun(sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.ones_like(t)

    def time_of(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return (sigma / alpha).clamp(max=self.sigma_max)

    def sample_training_noise_level(self, n: int, rng: Generator = None, device=None) -> Tensor:
        return (self.p_mean + self.p_std * torch.randn(n, generator=rng, device=device)).exp()

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) of Table 1."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def model_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        _, _, c_in, c_noise = self.preconditioning(t)
        return _per_sample(c_in, x_t) * x_t, c_noise

    def denoised(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        c_skip, c_out, _, _ = self.preconditioning(t)
        return _per_sample(c_skip, x_t) * x_t + _per_sample(c_out, x_t) * model_output

    def target(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """F's effective target (data - c_skip x) / c_out (eq. 8): the loss is lambda c_out^2 |F - target|^2 and
        lambda c_out^2 = 1."""
        c_skip, c_out, _, _ = self.preconditioning(t)
        x_t = self.noisy(data, noise, t)
        return (data - _per_sample(c_skip, data) * x_t) / _per_sample(c_out, data)

    def loss_weight(self, t: Tensor) -> Tensor:
        """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, on |D - data|^2."""
        return (t**2 + self.sigma_data**2) / (t * self.sigma_data) ** 2

    def loss(self, model_output: Tensor, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Per-sample lambda(sigma) |D(x; sigma) - data|^2 (mean over dims), eq. 2 and Table 1."""
        d = self.denoised(model_output, self.noisy(data, noise, t), t)
        return self.loss_weight(t).to(d) * _mean_per_sample((d - data) ** 2)


def beta_schedule(name: str, num_timesteps: int = 1000) -> Tensor:
    """DDPM's betas, float64 (T,): "linear" 1e-4..0.02 (Ho et al. 2020, section 4) or "cosine" (Nichol & Dhariwal
    2021, eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2), s = 0.008, betas <= 0.999).
    Scaled to T: linear is 1e-4 * 1000/T .. 0.02 * 1000/T, so any T gives the same continuous process."""
    if name == "linear":
        scale = 1000 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"beta schedule: expected 'linear' or 'cosine', got {name!r}")


def alphas_cumprod(name: str, num_timesteps: int = 1000) -> Tensor:
    """alpha_bar_n = prod_{i <= n} (1 - beta_i), float64, n = 0..T-1 (Ho et al.'s t = n + 1)."""
    return torch.cumprod(1 - beta_schedule(name, num_timesteps), 0)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """numpy.interp for increasing ``xp``, clamped at the ends."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    w = (x - xp[i - 1]) / (xp[i] - xp[i - 1])
    return fp[i - 1] + w * (fp[i] - fp[i - 1])


class VP(GaussianPath):
    """DDPM (Ho et al. 2020): x_n = sqrt(alpha_bar_n) data + sqrt(1 - alpha_bar_n) noise, n = 0..T-1, the net
    predicts the noise (epsilon) and is trained on L_simple = |eps_hat - noise|^2 at a uniform integer n.

    Between integer steps (asked for by samplers on other grids) the log-SNR log(alpha_bar / (1 - alpha_bar)) is
    interpolated linearly, so t is a continuous step index in [0, T-1].
    """

    def __init__(self, schedule: str = "linear", num_timesteps: int = 1000) -> None:
        self.schedule, self.num_timesteps = schedule, num_timesteps
        alpha_bar = alphas_cumprod(schedule, num_timesteps)
        self.log_snr = (alpha_bar / (1 - alpha_bar)).log()  # decreasing in n

    def ode_span(self) -> tuple[float, float, float]:
        return 0.0, float(self.num_timesteps - 1), 1.0

    def default_sampler(self) -> Sampler:
        """DDPM's ancestral sampler through all T steps (T NFE)."""
        from lit_gen.diffusion.samplers import DDPM

        return DDPM(self.schedule, self.num_timesteps)

    def _log_snr(self, t: Tensor) -> Tensor:
        table = self.log_snr.to(device=t.device, dtype=t.dtype)
        t = t.clamp(0, self.num_timesteps - 1)
        i = t.floor().clamp(max=self.num_timesteps - 2).long()
        w = t - i
        return table[i] + w * (table[i + 1] - table[i])

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sigmoid(self._log_snr(t)).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sigmoid(-self._log_snr(t)).sqrt()

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """alpha^2 = sigmoid(l), sigma^2 = sigmoid(-l): alpha' = alpha sigma^2 l' / 2, sigma' = -sigma alpha^2 l' / 2."""
        table = self.log_snr.to(device=t.device, dtype=t.dtype)
        i = t.clamp(0, self.num_timesteps - 1).floor().clamp(max=self.num_timesteps - 2).long()
        slope = table[i + 1] - table[i]
        alpha, sigma = self.alpha(t), self.sigma(t)
        return alpha * sigma**2 * slope / 2, -sigma * alpha**2 * slope / 2

    def time_of(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        log_snr = 2 * (alpha.log() - sigma.log())
        table = self.log_snr.to(device=alpha.device, dtype=alpha.dtype).flip(0)
        steps = torch.arange(self.num_timesteps - 1, -1, -1, device=alpha.device, dtype=alpha.dtype)
        return _interp(log_snr, table, steps)

    def sample_training_noise_level(self, n: int, rng: Generator = None, device=None) -> Tensor:
        return torch.randint(0, self.num_timesteps, (n,), generator=rng, device=device).float()

    def target(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return noise

    def denoised(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = _per_sample(self.alpha(t), x_t), _per_sample(self.sigma(t), x_t)
        return (x_t - sigma * model_output) / alpha


def ot_coupling(x0: Tensor, x1: Tensor) -> Tensor:
    """``x0`` reordered so that pairs (x0[i], x1[i]) minimise the total squared distance over the batch: the exact
    minibatch optimal-transport plan of Tong et al. 2024 (OT-CFM) for equal batches with uniform weights, which is a
    permutation (solved with the Hungarian algorithm)."""
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = torch.empty(len(x1), dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return x0[order.to(x0.device)]


class FlowMatching(GaussianPath):
    """Conditional flow matching on the straight path (Lipman et al. 2023 eq. 20-23; Liu et al. 2023 rectified flow
    when sigma_min = 0): x_t = t data + (1 - (1 - sigma_min) t) noise, t ~ U[0, 1], t = 0 noise and t = 1 data; the
    net predicts the velocity data - (1 - sigma_min) noise. ``ot``: pair noise and data by minibatch optimal
    transport (Tong et al. 2024, OT-CFM). Under DDP each rank pairs its own batch (no data crosses ranks): the
    minibatch of the coupling is the per-rank batch, not the global one.
    """

    def __init__(self, sigma_min: float = 0.0, ot: bool = False) -> None:
        self.sigma_min, self.ot = sigma_min, ot

    def ode_span(self) -> tuple[float, float, float]:
        return 1.0, 0.0, 1.0

    def default_sampler(self) -> Sampler:
        """Euler's method, 100 steps (100 NFE)."""
        from lit_gen.diffusion.samplers import FlowEuler

        return FlowEuler(100)

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1 - (1 - self.sigma_min) * t

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), torch.full_like(t, -(1 - self.sigma_min))

    def time_of(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return (alpha / (sigma + (1 - self.sigma_min) * alpha)).clamp(0, 1)

    def sample_training_noise_level(self, n: int, rng: Generator = None, device=None) -> Tensor:
        return torch.rand(n, generator=rng, device=device)

    def couple(self, data: Tensor, noise: Tensor) -> Tensor:
        return ot_coupling(noise, data) if self.ot else noise

    def target(self, data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return data - (1 - self.sigma_min) * noise

    def denoised(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        c = 1 - self.sigma_min
        return c * x_t + _per_sample(1 - c * t, x_t) * model_output

    def velocity(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return model_output
