"""Log-likelihood by the probability-flow ODE (Song et al. 2021, "Score-based generative modeling through SDEs",
appendix D.2; Chen et al. 2018 instantaneous change of variables): along dx/dt = v(x, t),
d log p_t(x_t) / dt = -div v(x_t, t), so

    log p_data(x) = log p_noise(x_noise) - integral_{t_noise}^{t_data} div v(x_t, t) dt,

with x_noise the end of the ODE solved from x at t_data to t_noise (fixed-step RK4 here). The divergence is exact
(one backward pass per dimension: low-dimensional data) or Hutchinson's estimate E[eps^T (dv/dx) eps] with one
Rademacher eps per sample held for the whole solve (Grathwohl et al. 2019, FFJORD): unbiased, for images.

With a path from ``paths.py``: ``ode_log_likelihood(path.velocity_fn(net), x, t_data, t_noise)``; FlowMatching
runs from t_data = 1 to t_noise = 0, where x is exactly standard normal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) per sample, nats."""
    return -0.5 * (x.flatten(1) ** 2).sum(1) - 0.5 * x[0].numel() * math.log(2 * math.pi)


def exact_divergence(velocity: Velocity, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(v(x, t), trace of dv/dx per sample), one backward pass per dimension."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        if not v.requires_grad:  # v does not depend on x
            return v.detach(), x.new_zeros(len(x))
        flat, n = v.flatten(1), x[0].numel()
        div = sum(
            torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < n - 1)[0].flatten(1)[:, i]
            for i in range(n)
        )
    return v.detach(), div.detach()


def hutchinson_divergence(velocity: Velocity, x: Tensor, t: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """(v(x, t), eps^T (dv/dx) eps per sample): an unbiased estimate of the divergence for E[eps eps^T] = I."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        if not v.requires_grad:
            return v.detach(), x.new_zeros(len(x))
        (vjp,) = torch.autograd.grad(v, x, eps)
    return v.detach(), (vjp * eps).flatten(1).sum(1).detach()


def ode_log_likelihood(
    velocity: Velocity,
    x: Tensor,
    t_data: float = 1.0,
    t_noise: float = 0.0,
    steps: int = 100,
    prior_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    divergence: str = "exact",
    rng: torch.Generator | None = None,
) -> Tensor:
    """log p(x) per sample (nats) under the flow of ``velocity`` from ``prior_log_prob`` at t_noise to t_data.

    ``divergence``: "exact" or "hutchinson"; ``steps`` fixed RK4 steps (4 evaluations each)."""
    if divergence == "exact":
        div_fn = exact_divergence
    elif divergence == "hutchinson":
        eps = torch.randint(0, 2, x.shape, generator=rng, device=x.device).to(x.dtype) * 2 - 1

        def div_fn(v, x_, t_):
            return hutchinson_divergence(v, x_, t_, eps)
    else:
        raise ValueError(f"divergence: expected 'exact' or 'hutchinson', got {divergence!r}")

    def f(x_: Tensor, t: float) -> tuple[Tensor, Tensor]:
        return div_fn(velocity, x_, x_.new_full((len(x_),), t))

    h = (t_noise - t_data) / steps
    integral = x.new_zeros(len(x))  # integral_{t_data}^{t} div v dt
    for i in range(steps):
        t = t_data + i * h
        v1, d1 = f(x, t)
        v2, d2 = f(x + h / 2 * v1, t + h / 2)
        v3, d3 = f(x + h / 2 * v2, t + h / 2)
        v4, d4 = f(x + h * v3, t + h)
        x = x + h / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
        integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    return prior_log_prob(x) + integral


def bits_per_dim(log_likelihood: Tensor, num_dims: int, bin_width: float = 2 / 256) -> Tensor:
    """Bits per dimension of discrete data from the log-density (nats) of uniformly dequantised data: each bin of
    width ``bin_width`` (2/256 for 8-bit data scaled to [-1, 1]) has probability ~ p(x) * bin_width per dimension,
    so bpd = -(log p(x) + D log bin_width) / (D log 2)."""
    return -(log_likelihood + num_dims * math.log(bin_width)) / (num_dims * math.log(2))


def dequantize(x: Tensor, bin_width: float = 2 / 256, rng: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation: x + U[0, bin_width) for data on the lower edges of its bins."""
    return x + bin_width * torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
