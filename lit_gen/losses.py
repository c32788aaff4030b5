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
    """Squared L2 norm of d critic(x) / dx per sample, computed in float32 so it stays finite under autocast.

    The gradient itself is taken inside the autocast-free block too: ``autograd.grad`` runs its backward ops
    under the caller's autocast state, and float16 matrix products there overflow for large critic gradients.
    """
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


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over all but the first dimension (x in {0, 1}, or [0, 1])."""
    log_p = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return log_p.flatten(1).sum(dim=1)


def gaussian_image_log_prob(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(log_var))) summed over all but the first dimension (a density, in nats)."""
    return gaussian_log_prob(x.flatten(1), mean.flatten(1), log_var.expand_as(mean).flatten(1))


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256) -> Tensor:
    """log P(x) of a logistic(mean, exp(log_scale)) discretized into ``bins`` equal bins on [0, 1]
    (Salimans et al. 2017, PixelCNN++, one component), summed over all but the first dimension.

    ``x`` holds the bin centres ``k / (bins - 1)``; the first and last bins take the tails, so the
    probabilities of the ``bins`` values sum to 1 exactly. ``mean`` is on the same [0, 1] scale.
    """
    half_bin = 0.5 / (bins - 1)
    centred = x - mean
    inv_scale = torch.exp(-log_scale)
    plus = inv_scale * (centred + half_bin)
    minus = inv_scale * (centred - half_bin)
    log_cdf_plus = -F.softplus(-plus)  # log sigmoid(plus): the lowest bin takes the left tail
    log_one_minus_cdf_minus = -F.softplus(minus)  # log(1 - sigmoid(minus)): the highest bin, the right tail
    # inner bins: log(sigmoid(plus) - sigmoid(minus)); where that difference underflows (far tails, tiny
    # scales) the density at the bin centre times the bin width stands in for it, as in PixelCNN++
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_scale * centred
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid)
    log_bin = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp(min=1e-12)),
        log_pdf_mid + math.log(2.0 * half_bin),
    )
    log_p = torch.where(
        x < half_bin, log_cdf_plus, torch.where(x > 1.0 - half_bin, log_one_minus_cdf_minus, log_bin)
    )
    return log_p.flatten(1).sum(dim=1)


def importance_log_weights(log_px_given_z: Tensor, z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log w = log p(x | z) + log p(z) - log q(z | x) for a standard-normal prior and a diagonal Gaussian q.

    Shapes: ``log_px_given_z`` (..., N), ``z`` (..., N, latent) drawn from q = N(mean, exp(log_var)) with
    ``mean``/``log_var`` (N, latent) broadcasting; returns (..., N).
    """
    return log_px_given_z + log_standard_normal(z) - gaussian_log_prob(z, mean, log_var)


def iwae_bound(log_weights: Tensor, dim: int = 0) -> Tensor:
    """log (1/k) sum_i w_i over the k importance samples along ``dim`` (Burda et al. 2015, eq. 8).

    k = 1 gives the ELBO; the bound is non-decreasing in k and tends to log p(x) (the importance-sampled
    NLL estimate is its negative with a large k, e.g. 5,000).
    """
    return torch.logsumexp(log_weights, dim=dim) - math.log(log_weights.shape[dim])


def bits_per_dim(nll_nats: Tensor, num_dims: int) -> Tensor:
    """A negative log-likelihood in nats per example converted to bits per data dimension."""
    return nll_nats / (num_dims * math.log(2.0))


def vq_codebook_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """||sg[z_e] - e||^2: moves the chosen codebook vectors towards the encoder outputs (van den Oord et al.
    2017); not used with EMA codebook updates. Mean over elements."""
    return F.mse_loss(z_q, z_e.detach())


def vq_commitment_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """||z_e - sg[e]||^2: keeps the encoder outputs close to their codes (weighted by beta = 0.25 in the
    paper). Mean over elements."""
    return F.mse_loss(z_e, z_q.detach())
