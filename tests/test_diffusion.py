"""Diffusion / flow-matching building blocks against known answers (no training): exact denoisers of Gaussian and
Gaussian-mixture data through every sampler and path, DDPM's forward marginals, the ODE likelihood, guidance, nets."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch

from lit_gen.diffusion import (
    DDIM,
    DDPM,
    EDM,
    VP,
    EDMHeun,
    FlowEuler,
    FlowHeun,
    FlowMatching,
    GuidedDenoiser,
    alphas_cumprod,
    beta_schedule,
    bits_per_dim,
    drop_labels,
    guide,
    ode_log_likelihood,
    ot_coupling,
)
from lit_gen.diffusion.likelihood import standard_normal_log_prob
from lit_gen.nets.time_mlp import TimeMLP
from lit_gen.nets.unet import UNet

MU = torch.tensor([1.5, -1.0], dtype=torch.float64)
S = 0.5  # data N(MU, S^2 I), S = EDM's sigma_data


def gaussian_denoiser(mu: torch.Tensor, cov: torch.Tensor):
    """E[data | x = alpha data + sigma noise] for data ~ N(mu, cov): mu + alpha cov (alpha^2 cov + sigma^2 I)^-1 (x - alpha mu)."""

    def denoise(x, alpha, sigma):
        a, s = alpha[:, None, None], sigma[:, None, None]
        eye = torch.eye(len(mu), dtype=x.dtype)
        gain = a * cov @ torch.linalg.inv(a**2 * cov + s**2 * eye)
        return mu + (gain @ (x - a[:, :, 0] * mu)[:, :, None])[:, :, 0]

    return denoise


def isotropic_denoiser(x, alpha, sigma):
    a, s, mu = alpha[:, None], sigma[:, None], MU.to(x.dtype)
    return mu + a * S**2 / (a**2 * S**2 + s**2) * (x - a * mu)


MIX_WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
MIX_MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
MIX_STD = 0.3


def mixture_denoiser(x, alpha, sigma):
    """E[data | x] for the isotropic mixture sum_k w_k N(m_k, s^2 I): posterior weights times per-component means."""
    a, s = alpha[:, None, None], sigma[:, None, None]
    var = a**2 * MIX_STD**2 + s**2  # (B, 1, 1), the variance of x given the component
    diff = x[:, None, :] - a * MIX_MEANS[None]  # (B, K, 2)
    log_post = MIX_WEIGHTS.log() - (diff**2).sum(-1) / (2 * var[:, :, 0])
    means = MIX_MEANS[None] + a * MIX_STD**2 / var * diff
    return (log_post.softmax(1)[:, :, None] * means).sum(1)


def standardized_noise(n: int, dim: int, seed: int) -> torch.Tensor:
    """Standard-normal draws shifted and scaled to sample mean 0 and variance 1 in each dimension: a deterministic
    sampler maps Gaussian data's noise affinely, so its output moments then carry no sampling error."""
    noise = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (noise - noise.mean(0)) / noise.std(0, correction=0)


def moment_errors(x: torch.Tensor) -> tuple[float, float]:
    """Largest relative errors of the sample mean and variance against MU and S^2."""
    mean_err = ((x.mean(0) - MU) / MU).abs().max().item()
    var_err = (x.var(0, correction=0) / S**2 - 1).abs().max().item()
    return mean_err, var_err


# steps at which each deterministic sampler's discretisation error of the variance is below 1 %
# (at the papers' defaults it is not: see test_deterministic_samplers_converge_at_their_order)
ACCURATE = {
    "edm_heun_128": EDMHeun(steps=128),
    "ddim_1000": DDIM(steps=1000),
    "flow_euler_1000": FlowEuler(steps=1000),
    "flow_heun_50": FlowHeun(),
}


@pytest.mark.parametrize("name", ACCURATE)
def test_deterministic_samplers_reproduce_gaussian_moments(name, record_property):
    sampler = ACCURATE[name]
    x = sampler(isotropic_denoiser, standardized_noise(1000, 2, seed=0))
    mean_err, var_err = moment_errors(x)
    record_property("errors", (sampler.nfe, mean_err, var_err))
    assert mean_err < 0.01 and var_err < 0.01


@pytest.mark.parametrize(
    ("make", "default_steps", "order"),
    [(EDMHeun, 18, 2), (DDIM, 50, 1), (FlowEuler, 100, 1), (FlowHeun, 50, 2)],
    ids=["edm_heun", "ddim", "flow_euler", "flow_heun"],
)
def test_deterministic_samplers_converge_at_their_order(make, default_steps, order, record_property):
    """From the default steps, halving the step size divides the variance error by 2^order (Heun's method: 2;
    Euler's and DDIM's first-order update: 1); EDM's rho-schedule halves its N - 1 intervals with 2N - 1 steps."""
    noise = standardized_noise(1000, 2, seed=0)
    finer = 2 * default_steps - 1 if make is EDMHeun else 2 * default_steps
    errors = [moment_errors(make(steps=steps)(isotropic_denoiser, noise)) for steps in (default_steps, finer)]
    record_property("errors", errors)
    assert errors[0][0] < 0.01  # the mean
    assert 2**order * 0.85 < errors[0][1] / errors[1][1] < 2**order * 1.15


def test_ddpm_reproduces_gaussian_moments(record_property):
    """Sampling error of the variance with n values: sqrt(2 / n) = 0.22 % at n = 400k."""
    rng = torch.Generator().manual_seed(1)
    sampler = DDPM()
    x = sampler(isotropic_denoiser, torch.randn(200_000, 2, generator=rng), rng).double()
    mean_err, var_err = moment_errors(x)
    record_property("errors", (sampler.nfe, mean_err, var_err))
    assert mean_err < 0.01 and var_err < 0.01


def test_ddim_eta_one_on_all_steps_is_ddpm_with_posterior_variance():
    """Song et al. 2021, section 4.1: eta = 1 makes the DDIM process DDPM's (variance beta_tilde)."""
    noise = torch.randn(64, 2, dtype=torch.float64)
    ddim = DDIM(steps=1000, eta=1.0)(mixture_denoiser, noise, torch.Generator().manual_seed(0))
    ddpm = DDPM(variance="posterior")(mixture_denoiser, noise, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)


def test_nfe_counts():
    noise = torch.zeros(3, 2, dtype=torch.float64)
    for sampler, nfe in [(EDMHeun(), 35), (DDPM(), 1000), (DDIM(), 50), (FlowEuler(), 100), (FlowHeun(), 99)]:
        sampler(isotropic_denoiser, noise, torch.Generator().manual_seed(0))
        assert sampler.nfe == nfe, type(sampler).__name__


@pytest.mark.parametrize(
    "sampler",
    [EDMHeun(), DDPM(), DDIM(), DDIM(eta=1.0), FlowEuler(), FlowHeun()],
    ids=["edm_heun", "ddpm", "ddim", "ddim_eta1", "flow_euler", "flow_heun"],
)
def test_samplers_recover_mixture_weights(sampler, record_property):
    rng = torch.Generator().manual_seed(2)
    x = sampler(mixture_denoiser, torch.randn(10_000, 2, generator=rng, dtype=torch.float64), rng)
    nearest = torch.cdist(x, MIX_MEANS).argmin(1)
    weights = torch.bincount(nearest, minlength=3).double() / len(x)
    record_property("weights", weights.tolist())
    assert (weights - MIX_WEIGHTS).abs().max() < 0.02


def ideal_net(path, denoise):
    """The net a path's loss is minimised by, for data whose exact denoiser is ``denoise``: the target at the
    posterior mean of the data and the noise, as a function of what the path feeds the net."""

    def net(net_x, net_t):
        if isinstance(path, EDM):
            sigma = (4 * net_t).exp()
            x_t = net_x * (sigma**2 + path.sigma_data**2).sqrt()[:, None]
            t = sigma
        else:
            x_t, t = net_x, net_t
        alpha, sigma = path.alpha(t), path.sigma(t)
        data = denoise(x_t, alpha, sigma)
        noise = (x_t - alpha[:, None] * data) / sigma[:, None]
        return path.target(data, noise, t)

    return net


PATHS = {
    "edm": EDM(),
    "vp": VP(),
    "vp_cosine": VP(schedule="cosine"),
    "flow": FlowMatching(),
    "flow_ot_sigma_min": FlowMatching(sigma_min=1e-2, ot=True),
}


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_path_denoiser_of_ideal_net_is_exact(path):
    """path.denoiser converts any (alpha, sigma) into the path's time and back: the ideal net gives the exact
    denoiser at noise levels off the path's grid (VP between steps)."""
    rng = torch.Generator().manual_seed(3)
    x = torch.randn(64, 2, generator=rng, dtype=torch.float64)
    alpha = torch.rand(64, generator=rng, dtype=torch.float64) * 0.9 + 0.05
    sigma = torch.rand(64, generator=rng, dtype=torch.float64) * 0.9 + 0.05
    got = path.denoiser(ideal_net(path, isotropic_denoiser))(x, alpha, sigma)
    torch.testing.assert_close(got, isotropic_denoiser(x, alpha, sigma), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_training_loss_of_ideal_net_on_a_single_point_is_zero(path):
    """Data = one point: the ideal net's output is exactly the target at every training noise level, so the loss
    is 0; a wrong output gives a positive loss (target, model_input and denoised agree)."""
    rng = torch.Generator().manual_seed(12)
    point = torch.tensor([0.7, -0.4], dtype=torch.float64)
    data = point.expand(256, 2)
    t = path.sample_training_noise_level(256, rng).double()
    noise = path.couple(data, torch.randn(256, 2, generator=rng, dtype=torch.float64))
    net = ideal_net(path, lambda x, a, s: point.expand_as(x))
    output = net(*path.model_input(path.noisy(data, noise, t), t))
    assert path.loss(output, data, noise, t).abs().max().item() < 1e-12
    assert (path.loss(output + 0.1, data, noise, t) > 0).all()


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_path_velocity_is_the_time_derivative_of_the_noisy_sample(path):
    """With a single data point (denoiser = that point) the ODE moves x_t = alpha(t) data + sigma(t) noise along t:
    path.velocity of the ideal output equals the central difference of path.noisy."""
    data, noise = (
        torch.tensor([[0.7, -0.4]], dtype=torch.float64),
        torch.tensor([[0.3, 1.1]], dtype=torch.float64),
    )
    for t in {EDM: [0.1, 2.0], VP: [10.3, 400.6], FlowMatching: [0.2, 0.7]}[type(path)]:
        t, h = torch.tensor([t], dtype=torch.float64), 1e-6 * (1 if t < 100 else 10)
        x_t = path.noisy(data, noise, t)
        net = ideal_net(path, lambda x, a, s: data.expand_as(x))
        velocity = path.velocity_fn(net)(x_t, t)
        finite_difference = (path.noisy(data, noise, t + h) - path.noisy(data, noise, t - h)) / (2 * h)
        torch.testing.assert_close(velocity, finite_difference, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("path", "sampler"),
    [
        (VP(), FlowHeun()),
        (FlowMatching(), EDMHeun(steps=128)),
        (EDM(), DDIM(steps=1000)),
        (EDM(), FlowHeun()),
    ],
    ids=["vp+flow_heun", "flow+edm_heun", "edm+ddim", "edm+flow_heun"],
)
def test_any_sampler_runs_any_path(path, sampler):
    """Deterministic samplers on the ideal nets of other paths (DDPM's path conversion is the same code)."""
    x = sampler(path.denoiser(ideal_net(path, isotropic_denoiser)), standardized_noise(1000, 2, seed=4))
    mean_err, var_err = moment_errors(x)
    assert mean_err < 0.01 and var_err < 0.01


def test_ddpm_forward_marginals_are_exact():
    """Running the chain q(x_n | x_{n-1}) = N(sqrt(1 - beta_n) x_{n-1}, beta_n) from a fixed x_0 gives
    q(x_n | x_0) = N(sqrt(alpha_bar_n) x_0, 1 - alpha_bar_n), which VP.noisy draws from directly."""
    rng = torch.Generator().manual_seed(5)
    x0, n_samples = torch.tensor([2.0, -1.0], dtype=torch.float64), 20_000
    for schedule in ("linear", "cosine"):
        betas, alpha_bar = beta_schedule(schedule), alphas_cumprod(schedule)
        x = x0.expand(n_samples, 2)
        path = VP(schedule=schedule)
        for n, beta in enumerate(betas.tolist()):
            x = (1 - beta) ** 0.5 * x + beta**0.5 * torch.randn(x.shape, generator=rng, dtype=x.dtype)
            if n in (0, 99, 499, 999):
                mean, var = alpha_bar[n].sqrt() * x0, 1 - alpha_bar[n]
                # within 4 standard errors of the sample mean and variance
                assert ((x.mean(0) - mean).abs() < 4 * (var / n_samples) ** 0.5).all()
                assert ((x.var(0) / var - 1).abs() < 4 * (2 / n_samples) ** 0.5).all()
                t = torch.full((1,), float(n), dtype=torch.float64)
                assert path.alpha(t).item() == pytest.approx(alpha_bar[n].sqrt().item(), rel=1e-12)
                assert path.sigma(t).item() == pytest.approx((1 - alpha_bar[n]).sqrt().item(), rel=1e-12)
                noisy = path.noisy(
                    x0.expand(n_samples, 2),
                    torch.randn(n_samples, 2, dtype=torch.float64),
                    t.expand(n_samples),
                )
                assert ((noisy.mean(0) - mean).abs() < 4 * (var / n_samples) ** 0.5).all()
    assert alphas_cumprod("linear")[-1].item() == pytest.approx(
        4.036e-5, rel=1e-3
    )  # Ho et al.'s L_T ~ 1e-5 nats


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_not():
    noise = torch.randn(16, 2, dtype=torch.float64)
    runs = [DDIM(eta=0.0)(mixture_denoiser, noise, torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert torch.equal(runs[0], runs[1])
    runs = [DDIM(eta=1.0)(mixture_denoiser, noise, torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.allclose(runs[0], runs[1])


def test_edm_preconditioning_and_training_noise():
    """Table 1: c_skip + c_out c_in-style identities at sigma = sigma_data; log-normal training sigma; the loss on F
    equals lambda |D - data|^2 because lambda c_out^2 = 1."""
    path = EDM()
    c_skip, c_out, c_in, c_noise = path.preconditioning(torch.tensor([0.5], dtype=torch.float64))
    assert (c_skip.item(), c_out.item(), c_in.item()) == pytest.approx((0.5, 0.5**0.5 / 2, 2**0.5))
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4)
    log_sigma = path.sample_training_noise_level(200_000, torch.Generator().manual_seed(6)).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.01)
    rng = torch.Generator().manual_seed(7)
    data, noise, output = (torch.randn(8, 3, generator=rng, dtype=torch.float64) for _ in range(3))
    sigma = path.sample_training_noise_level(8, rng).double()
    torch.testing.assert_close(
        path.loss(output, data, noise, sigma), ((output - path.target(data, noise, sigma)) ** 2).mean(1)
    )
    assert path.loss_weight(torch.tensor([0.5])).item() == pytest.approx(8.0)  # (0.25 + 0.25) / 0.0625


def test_ot_coupling_matches_brute_force():
    rng = torch.Generator().manual_seed(8)
    x0, x1 = torch.randn(6, 3, generator=rng), torch.randn(6, 3, generator=rng)
    best = min(((x0[list(p)] - x1) ** 2).sum().item() for p in permutations(range(6)))
    paired = ot_coupling(x0, x1)
    assert ((paired - x1) ** 2).sum().item() == pytest.approx(best, rel=1e-6)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, x0.tolist()))
    assert torch.equal(FlowMatching(ot=True).couple(x1, x0), paired)


def test_log_likelihood_of_constant_velocity_is_the_shifted_prior():
    v = torch.tensor([0.7, -1.3, 0.2], dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    for divergence in ("exact", "hutchinson"):
        got = ode_log_likelihood(lambda x_, t: v.expand_as(x_), x, steps=10, divergence=divergence)
        torch.testing.assert_close(got, standard_normal_log_prob(x - v), rtol=0, atol=1e-5)


def test_log_likelihood_of_gaussian_flow_matches_analytic_density(record_property):
    """Flow matching's exact velocity for data N(mu, cov) (full covariance, so the Jacobian is not diagonal):
    at t the marginal is N(t mu, t^2 cov + (1 - t)^2 I)."""
    cov = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
    denoise = gaussian_denoiser(MU, cov)

    def velocity(x, t):
        return (denoise(x, t, 1 - t) - x) / (1 - t)[:, None]

    t_data = 0.999
    x = (
        MU
        + torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        @ torch.linalg.cholesky(cov).T
    )
    marginal = torch.distributions.MultivariateNormal(
        t_data * MU, t_data**2 * cov + (1 - t_data) ** 2 * torch.eye(2)
    )
    exact = ode_log_likelihood(velocity, x, t_data=t_data, steps=200)
    err = (exact - marginal.log_prob(x)).abs().max().item()
    # Hutchinson: unbiased, so its average over many probes of the same points converges to the exact value
    repeated = x.repeat_interleave(2000, 0)
    hutch = ode_log_likelihood(
        velocity,
        repeated,
        t_data=t_data,
        steps=50,
        divergence="hutchinson",
        rng=torch.Generator().manual_seed(10),
    ).view(4, 2000)
    hutch_err = (hutch.mean(1) - marginal.log_prob(x)).abs().max().item()
    record_property("errors", (err, hutch_err, hutch.std(1).max().item()))
    assert err < 1e-4
    assert hutch_err < 4 * hutch.std(1).max().item() / 2000**0.5 + 1e-3


def test_bits_per_dim_of_uniform_density_is_eight():
    """Uniform density 1/2 per dimension on [-1, 1]: each of 256 bins has probability 1/256, i.e. 8 bits."""
    dims = 3 * 4 * 4
    assert bits_per_dim(torch.tensor([-dims * math.log(2)]), dims).item() == pytest.approx(8.0)


def test_guidance_weights():
    calls = []

    def denoise(x, alpha, sigma, labels):
        calls.append(len(x))
        return x + labels[:, None].to(x)

    x, a = torch.zeros(4, 2), torch.ones(4)
    labels, null = torch.tensor([0, 1, 2, 3]), 10
    assert torch.equal(GuidedDenoiser(denoise, labels, 0.0, null)(x, a, a), torch.full((4, 2), 10.0))
    assert torch.equal(
        GuidedDenoiser(denoise, labels, 1.0, null)(x, a, a), labels[:, None].float().expand(4, 2)
    )
    calls.clear()
    out = GuidedDenoiser(denoise, labels, 3.0, null)(x, a, a)
    assert calls == [8]  # conditional and unconditional in one call
    torch.testing.assert_close(out, guide(labels[:, None].float(), torch.tensor(10.0), 3.0).expand(4, 2))
    torch.testing.assert_close(out, 10 + 3 * (labels[:, None].float() - 10).expand(4, 2))


def test_drop_labels_rate_and_null_class():
    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(11))
    dropped = drop_labels(labels, 0.1, null_class=10, rng=torch.Generator().manual_seed(12))
    changed = dropped != labels
    assert (dropped[changed] == 10).all()
    assert changed.double().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)


@pytest.mark.parametrize(
    "config",
    [
        dict(in_channels=3, image_size=16, channels=32, channel_mult=(1, 2), attention_resolutions=(8,)),
        dict(in_channels=1, image_size=28, channels=32, channel_mult=(1, 2, 2), attention_resolutions=(14,)),
        dict(
            in_channels=3,
            image_size=8,
            channels=16,
            channel_mult=(1,),
            num_res_blocks=1,
            embedding="fourier",
            skip_rescale=True,
            attention_heads=2,
            attention_resolutions=(8,),
        ),
    ],
)
def test_unet_shapes_and_class_conditioning(config):
    torch.manual_seed(0)
    net = UNet(num_classes=10, zero_init=False, **config).eval()
    x = torch.randn(2, config["in_channels"], config["image_size"], config["image_size"])
    t = torch.tensor([3.0, 500.0])
    out = net(x, t, torch.tensor([1, 2]))
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, torch.tensor([3, 4])))
    assert torch.equal(net(x, t), net(x, t, torch.tensor([10, 10])))  # no labels = the null class
    with pytest.raises(ValueError, match="num_classes"):
        UNet(**config)(x, t, torch.tensor([1, 2]))


def test_unet_zero_init_outputs_zero():
    net = UNet(in_channels=1, image_size=8, channels=16, channel_mult=(1,), attention_resolutions=())
    assert torch.equal(net(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.0])), torch.zeros(2, 1, 8, 8))


def test_unet_ddpm_cifar10_parameter_count(record_property):
    """Ho et al. 2020, appendix B: 35.7 M parameters for CIFAR-10."""
    count = sum(p.numel() for p in UNet().parameters())
    record_property("parameters", count)
    assert count == pytest.approx(35.7e6, rel=0.002)


@pytest.mark.parametrize("num_classes", [None, 4])
def test_time_mlp_shapes_and_conditioning(num_classes):
    torch.manual_seed(0)
    net = TimeMLP(data_dim=2, hidden=[32, 32], num_classes=num_classes)
    x, t = torch.randn(5, 2), torch.rand(5)
    assert net(x, t).shape == x.shape
    assert not torch.allclose(net(x, t), net(x, t + 0.5))
    if num_classes is not None:
        assert not torch.allclose(
            net(x, t, torch.zeros(5, dtype=torch.long)), net(x, t, torch.ones(5, dtype=torch.long))
        )


def test_guided_sampling_with_a_net_through_a_path():
    """GuidedDenoiser on path.denoiser(net): weight 1 samples as the conditional denoiser, weight 0 as the null one."""
    torch.manual_seed(0)
    net, path, sampler = TimeMLP(hidden=[16], num_classes=3).double(), FlowMatching(), FlowHeun(steps=5)
    labels, noise = torch.tensor([0, 1, 2, 1]), torch.randn(4, 2, dtype=torch.float64)
    for weight, reference_labels in ((1.0, labels), (0.0, torch.full_like(labels, 3))):
        guided = sampler(GuidedDenoiser(path.denoiser(net), labels, weight, null_class=3), noise)
        torch.testing.assert_close(guided, sampler(path.denoiser(net, labels=reference_labels), noise))
    guided = sampler(GuidedDenoiser(path.denoiser(net), labels, 2.0, null_class=3), noise)
    assert sampler.nfe == 9 and not torch.allclose(guided, sampler(path.denoiser(net, labels=labels), noise))


def test_hutchinson_log_likelihood_of_a_net_averages_to_the_exact_one():
    torch.manual_seed(0)
    net, path = TimeMLP(hidden=[16, 16]).double(), FlowMatching()
    x = torch.randn(3, 2, dtype=torch.float64)
    exact = ode_log_likelihood(path.velocity_fn(net), x, steps=8)
    hutch = ode_log_likelihood(
        path.velocity_fn(net),
        x.repeat_interleave(4000, 0),
        steps=8,
        divergence="hutchinson",
        rng=torch.Generator().manual_seed(13),
    ).view(3, 4000)
    assert ((hutch.mean(1) - exact).abs() < 4 * hutch.std(1) / 4000**0.5 + 1e-9).all()
