"""Adversarial objectives and gradient penalties against values computed by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lit_gen import losses
from lit_gen.losses import R1, WGANGP, Hinge, LeastSquares, Minimax, NonSaturating, Wasserstein

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# --- adversarial objectives ----------------------------------------------------------------------------------


def test_minimax_discriminator_loss_is_binary_cross_entropy():
    # -mean log sigmoid(real) - mean log(1 - sigmoid(fake)), written out term by term
    expected = -_mean(_log_sigmoid(r) for r in REAL.tolist()) - _mean(
        math.log(1.0 - 1.0 / (1.0 + math.exp(-f))) for f in FAKE.tolist()
    )
    assert losses.d_loss_minimax(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert NonSaturating().discriminator(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert Minimax().discriminator(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_minimax_discriminator_loss_at_zero_logits_is_2_log_2():
    zeros = torch.zeros(4)
    assert losses.d_loss_minimax(zeros, zeros).item() == pytest.approx(2 * math.log(2.0), rel=1e-6)


def test_generator_losses_of_the_bce_games():
    # non-saturating: -mean log D(G(z)); minimax: mean log(1 - D(G(z)))
    sig = [1.0 / (1.0 + math.exp(-f)) for f in FAKE.tolist()]
    assert NonSaturating().generator(FAKE).item() == pytest.approx(-_mean(math.log(s) for s in sig), rel=1e-6)
    assert Minimax().generator(FAKE).item() == pytest.approx(_mean(math.log(1 - s) for s in sig), rel=1e-6)


def test_bce_games_stay_finite_for_extreme_logits():
    big = torch.tensor([200.0, -200.0])
    for value in (
        losses.d_loss_minimax(big, big),
        losses.g_loss_minimax(big),
        losses.g_loss_non_saturating(big),
    ):
        assert torch.isfinite(value)
    # -log sigmoid(-200) = 200 (up to exp(-200))
    assert losses.g_loss_non_saturating(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_hinge():
    # D: mean relu(1 - real) + mean relu(1 + fake) = mean(0, 2, 0.5) + mean(0, 1, 2.5)
    expected_d = (0 + 2 + 0.5) / 3 + (0 + 1 + 2.5) / 3
    assert Hinge().discriminator(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    assert Hinge().generator(FAKE).item() == pytest.approx(-(-3.0 + 0.0 + 1.5) / 3, rel=1e-6)


def test_wasserstein():
    expected_d = (-3.0 + 0.0 + 1.5) / 3 - (2.0 - 1.0 + 0.5) / 3
    assert Wasserstein().discriminator(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    assert Wasserstein().generator(FAKE).item() == pytest.approx(0.5, rel=1e-6)


def test_least_squares():
    # D: 1/2 mean (real - 1)^2 + 1/2 mean fake^2 = 1/2 (1 + 4 + 0.25) / 3 + 1/2 (9 + 0 + 2.25) / 3
    expected_d = 0.5 * (1 + 4 + 0.25) / 3 + 0.5 * (9 + 0 + 2.25) / 3
    assert LeastSquares().discriminator(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    # G: 1/2 mean (fake - 1)^2 = 1/2 (16 + 1 + 0.25) / 3
    assert LeastSquares().generator(FAKE).item() == pytest.approx(0.5 * 17.25 / 3, rel=1e-6)


@pytest.mark.parametrize("loss_cls", [NonSaturating, Minimax, Hinge, Wasserstein, LeastSquares])
def test_loss_gradients_push_the_players_the_right_way(loss_cls):
    """D's loss falls when real logits rise / fake logits fall; G's loss falls when fake logits rise (logits in
    (0, 1), where every objective, least squares and hinge included, is still active)."""
    loss = loss_cls()
    real = torch.tensor([0.3, 0.2], requires_grad=True)
    fake = torch.tensor([0.1, 0.4], requires_grad=True)
    loss.discriminator(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake_g = torch.tensor([0.1, 0.4], requires_grad=True)
    loss.generator(fake_g).backward()
    assert (fake_g.grad < 0).all()


def test_score_is_a_probability_only_for_the_bce_games():
    logits = torch.tensor([0.0, 2.0])
    assert torch.allclose(NonSaturating().score(logits), torch.sigmoid(logits))
    assert torch.allclose(Minimax().score(logits), torch.sigmoid(logits))
    for loss in (Hinge(), Wasserstein(), LeastSquares()):
        assert torch.equal(loss.score(logits), logits)


# --- gradient penalties --------------------------------------------------------------------------------------


def _linear_critic(w: torch.Tensor):
    """D(x) = w . flatten(x): its input gradient is w at every x."""
    return lambda x: x.reshape(x.shape[0], -1) @ w


def test_wgan_gp_on_a_linear_critic_is_squared_norm_gap_everywhere():
    w = torch.tensor([3.0, 4.0, 0.0, 0.0])  # ||w|| = 5
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    value = losses.wgan_gp_penalty(_linear_critic(w), real, fake)
    assert value.item() == pytest.approx((5.0 - 1.0) ** 2, rel=1e-5)


def test_r1_on_a_linear_critic_is_squared_norm():
    w = torch.tensor([1.0, -2.0, 2.0])  # ||w||^2 = 9
    assert losses.r1_penalty(_linear_critic(w), torch.randn(5, 3)).item() == pytest.approx(9.0, rel=1e-5)
    assert R1(gamma=4.0)(_linear_critic(w), torch.randn(5, 3), None, None).item() == pytest.approx(
        0.5 * 4.0 * 9.0, rel=1e-5
    )


def test_penalty_gradient_reaches_the_critic_parameters():
    """create_graph: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||, and d/dw ||w||^2 = 2w."""
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    losses.wgan_gp_penalty(_linear_critic(w), torch.randn(3, 2), torch.randn(3, 2)).backward()
    assert torch.allclose(w.grad, 2 * (5.0 - 1.0) * w.detach() / 5.0, atol=1e-5)
    w.grad = None
    losses.r1_penalty(_linear_critic(w), torch.randn(3, 2)).backward()
    assert torch.allclose(w.grad, 2 * w.detach(), atol=1e-5)


def test_wgan_gp_interpolates_with_the_given_mix():
    """Quadratic critic D(x) = ||x||^2 / 2 has gradient x: the penalty is mean (||x_hat|| - 1)^2 at
    x_hat = mix * real + (1 - mix) * fake."""
    real = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    mix = torch.tensor([0.25, 0.5])  # x_hat = (0.5, 0), (0, 2): norms 0.5 and 2
    critic = lambda x: 0.5 * x.pow(2).sum(dim=1)  # noqa: E731
    expected = ((0.5 - 1.0) ** 2 + (2.0 - 1.0) ** 2) / 2
    assert losses.wgan_gp_penalty(critic, real, fake, mix).item() == pytest.approx(expected, rel=1e-5)
    assert WGANGP(weight=10.0)(critic, real, fake, mix).item() == pytest.approx(10 * expected, rel=1e-5)


def _finite_difference_grad(critic: nn.Module, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of each sample's critic output with respect to that sample (float64; the critic is
    converted in place, so pass a copy)."""
    critic = critic.double()
    x = x.double()
    grad = torch.zeros_like(x)
    flat = grad.view(x.shape[0], -1)
    for j in range(flat.shape[1]):
        step = torch.zeros_like(x).view(x.shape[0], -1)
        step[:, j] = eps
        step = step.view_as(x)
        with torch.no_grad():
            flat[:, j] = (critic(x + step) - critic(x - step)) / (2 * eps)
    return grad


def test_penalties_match_finite_differences_on_a_nonlinear_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    real, fake, mix = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5)
    x_hat = mix[:, None] * real + (1 - mix[:, None]) * fake
    norms_hat = _finite_difference_grad(copy.deepcopy(critic), x_hat).norm(dim=1)
    norms_real = _finite_difference_grad(copy.deepcopy(critic), real).norm(dim=1)
    gp = losses.wgan_gp_penalty(critic, real, fake, mix).item()
    r1 = losses.r1_penalty(critic, real).item()
    assert gp == pytest.approx(((norms_hat - 1) ** 2).mean().item(), rel=1e-4)
    assert r1 == pytest.approx((norms_real**2).mean().item(), rel=1e-4)


def test_penalty_is_float32_under_autocast():
    w = torch.tensor([3.0, 4.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.wgan_gp_penalty(_linear_critic(w), torch.randn(3, 2), torch.randn(3, 2))
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(16.0, rel=1e-5)


# --- ELBO helpers (used by the VAE family) -------------------------------------------------------------------


def test_gaussian_kl_standard_normal_closed_form():
    mean, log_var = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # 1/2 (mu^2 + s^2 - 1 - log s^2) per dimension: 1/2 (1 + 1 - 1 - 0) + 1/2 (0 + 4 - 1 - log 4)
    expected = 0.5 + 0.5 * (3 - math.log(4.0))
    assert losses.gaussian_kl_standard_normal(mean, log_var).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean, log_var = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    expected = torch.distributions.Normal(mean, (0.5 * log_var).exp()).log_prob(x).sum(-1)
    assert torch.allclose(losses.gaussian_log_prob(x, mean, log_var), expected, atol=1e-5)
