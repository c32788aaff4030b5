"""Pure loss functions: adversarial objectives, gradient penalties and ELBO terms.

Every function takes tensors (or a callable critic) and returns a scalar tensor; nothing here holds state.
The small loss classes at the bottom only pair a discriminator loss with its generator loss so that a config
can choose an objective with one ``class_path``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# --- adversarial objectives: logits are raw discriminator outputs -------------------------------------------


def d_loss_minimax(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-E[log D(x)] - E[log(1 - D(G(z)))] (Goodfellow et al. 2014); the same for the non-saturating game."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_minimax(fake_logits: Tensor) -> Tensor:
    """E[log(1 - D(G(z)))]: the original, saturating generator objective (minimised)."""
    return -F.softplus(fake_logits).mean()


def g_loss_non_saturating(fake_logits: Tensor) -> Tensor:
    """-E[log D(G(z))]: the non-saturating generator objective."""
    return F.softplus(-fake_logits).mean()


def d_loss_hinge(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017; SNGAN, BigGAN)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss_hinge(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake_logits.mean()


def d_loss_wasserstein(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[D(G(z))] - E[D(x)] (Arjovsky et al. 2017); pair with a Lipschitz constraint such as WGAN-GP."""
    return fake_logits.mean() - real_logits.mean()


def g_loss_wasserstein(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake_logits.mean()


def d_loss_least_squares(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2] (Mao et al. 2017, a=0, b=c=1)."""
    return 0.5 * ((real_logits - 1.0) ** 2).mean() + 0.5 * (fake_logits**2).mean()


def g_loss_least_squares(fake_logits: Tensor) -> Tensor:
    """1/2 E[(D(G(z)) - 1)^2]."""
    return 0.5 * ((fake_logits - 1.0) ** 2).mean()


# --- gradient penalties --------------------------------------------------------------------------------------


def _input_gradient_norm_sq(critic: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """Squared L2 norm of d critic(x) / dx per sample, computed in float32 so it stays finite under autocast."""
    inputs = inputs.detach().float().requires_grad_(True)
    with torch.autocast(device_type=inputs.device.type, enabled=False):
        outputs = critic(inputs).float()
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1)


def wgan_gp_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, mix: Tensor | None = None
) -> Tensor:
    """E[(||grad D(x_hat)|| - 1)^2] at x_hat = mix * real + (1 - mix) * fake (Gulrajani et al. 2017).

    ``mix`` holds one U(0, 1) draw per sample; pass it to make the penalty reproducible.
    """
    if mix is None:
        mix = torch.rand(real.shape[0], device=real.device)
    mix = mix.reshape(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    interpolated = mix * real.detach() + (1.0 - mix) * fake.detach()
    norm = (_input_gradient_norm_sq(critic, interpolated) + 1e-12).sqrt()
    return ((norm - 1.0) ** 2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """E[||grad D(x)||^2] on real data (Mescheder et al. 2018); weighted by gamma / 2 by the caller."""
    return _input_gradient_norm_sq(critic, real).mean()


class AdversarialLoss:
    """A GAN objective: a discriminator loss and the generator loss that goes with it."""

    #: whether sigmoid(logit) is a probability (used only to log D(x) and D(G(z)) in familiar units)
    probabilistic: bool = False

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, logits: Tensor) -> Tensor:
        """D's output in the units papers report: a probability for the BCE games, the raw critic value else."""
        return torch.sigmoid(logits) if self.probabilistic else logits


class NonSaturating(AdversarialLoss):
    """Binary cross-entropy D, non-saturating G (-log D(G(z))): the standard GAN objective."""

    probabilistic = True

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return d_loss_minimax(real_logits, fake_logits)

    def generator(self, fake_logits: Tensor) -> Tensor:
        return g_loss_non_saturating(fake_logits)


class Minimax(AdversarialLoss):
    """The original minimax game: G minimises log(1 - D(G(z)))."""

    probabilistic = True

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return d_loss_minimax(real_logits, fake_logits)

    def generator(self, fake_logits: Tensor) -> Tensor:
        return g_loss_minimax(fake_logits)


class Hinge(AdversarialLoss):
    """Hinge loss (SNGAN, BigGAN)."""

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return d_loss_hinge(real_logits, fake_logits)

    def generator(self, fake_logits: Tensor) -> Tensor:
        return g_loss_hinge(fake_logits)


class Wasserstein(AdversarialLoss):
    """Wasserstein critic loss (WGAN); needs a Lipschitz constraint (WGANGP penalty, spectral norm)."""

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return d_loss_wasserstein(real_logits, fake_logits)

    def generator(self, fake_logits: Tensor) -> Tensor:
        return g_loss_wasserstein(fake_logits)


class LeastSquares(AdversarialLoss):
    """Least-squares GAN (Mao et al. 2017)."""

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return d_loss_least_squares(real_logits, fake_logits)

    def generator(self, fake_logits: Tensor) -> Tensor:
        return g_loss_least_squares(fake_logits)


class Penalty:
    """A regulariser added to the discriminator loss; ``name`` is the key it is logged under."""

    name: str = "penalty"

    def __call__(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, mix: Tensor) -> Tensor:
        raise NotImplementedError


class WGANGP(Penalty):
    """weight * E[(||grad D(x_hat)|| - 1)^2]; the WGAN-GP paper uses weight 10."""

    name = "gradient_penalty"

    def __init__(self, weight: float = 10.0) -> None:
        self.weight = weight

    def __call__(self, critic, real, fake, mix):
        return self.weight * wgan_gp_penalty(critic, real, fake, mix)


class R1(Penalty):
    """gamma / 2 * E[||grad D(x)||^2] on real data (Mescheder et al. 2018; gamma = 10 in their CIFAR setup)."""

    name = "r1_penalty"

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = gamma

    def __call__(self, critic, real, fake, mix):
        return 0.5 * self.gamma * r1_penalty(critic, real)


# --- ELBO terms ----------------------------------------------------------------------------------------------

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over the last dimension (closed form)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=-1)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(log_var))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (x - mean).pow(2) / log_var.exp()).sum(dim=-1)
