"""VAE family: the likelihood estimator against a model with a closed-form likelihood (probabilistic PCA),
ELBO terms against closed forms, dynamic binarization, the Burda LR schedule, and every VAE config end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lit_gen.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian, dynamic_binarization
from lit_gen.losses import (
    bernoulli_log_prob,
    discretized_logistic_log_prob,
    gaussian_kl_standard_normal,
    iwae_bound,
)
from lit_gen.models.vae import VAE
from lit_gen.optim import BurdaLR

# --- probabilistic PCA: p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), so p(x) = N(b, W W^T + s^2 I) -----------

DATA_DIM, LATENT_DIM, NOISE_STD = 6, 2, 0.5


class LinearDecoder(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.latent_dim, self.params_per_pixel = weight.shape[1], 1
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, z):
        return z @ self.weight.t() + self.bias


class PosteriorEncoder(nn.Module):
    """q(z | x) = N(A (x - b), diag(v)) with A, v of the exact PPCA posterior, optionally perturbed."""

    def __init__(self, weight, bias, mean_shift: float = 0.0, var_scale: float = 1.0) -> None:
        super().__init__()
        self.latent_dim = weight.shape[1]
        m = weight.t() @ weight + NOISE_STD**2 * torch.eye(self.latent_dim)
        self.register_buffer("a", torch.linalg.solve(m, weight.t()))
        self.register_buffer("bias", bias)
        self.register_buffer(
            "log_var", torch.log(var_scale * NOISE_STD**2 * torch.diagonal(torch.linalg.inv(m)))
        )
        self.mean_shift = mean_shift

    def forward(self, x):
        mean = (x - self.bias) @ self.a.t() + self.mean_shift
        return mean, self.log_var.expand_as(mean)


def ppca(mean_shift: float = 0.0, var_scale: float = 1.0):
    """A PPCA model whose W has orthogonal columns (so the exact posterior is diagonal), data drawn from it,
    and the exact log-likelihood of the data."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(DATA_DIM, LATENT_DIM, generator=g, dtype=torch.float64))
    weight = (q * torch.tensor([2.0, 1.0], dtype=torch.float64)).float()
    bias = torch.randn(DATA_DIM, generator=g)
    marginal = torch.distributions.MultivariateNormal(
        bias.double(), weight.double() @ weight.double().t() + NOISE_STD**2 * torch.eye(DATA_DIM).double()
    )
    x = marginal.sample((64,)).float()
    exact = marginal.log_prob(x.double()).float()
    model = VAE(
        PosteriorEncoder(weight, bias, mean_shift, var_scale),
        LinearDecoder(weight, bias),
        likelihood=Gaussian(learned_variance=False, std=NOISE_STD),
        chunk_size=64,
    )
    return model, x, exact


def test_iwae_estimate_is_exact_with_the_true_posterior():
    model, x, exact = ppca()
    for k in (1, 7, 100):
        estimate = model.log_likelihood(x, k, torch.Generator().manual_seed(k))
        torch.testing.assert_close(estimate, exact, atol=2e-4, rtol=0)
    elbo = model.objective(x, 1, 1.0, torch.Generator().manual_seed(0))["elbo"].detach()
    # the ELBO with the analytic KL still has Monte-Carlo noise in E_q[log p(x|z)]; with q = posterior the
    # gap log p(x) - ELBO = KL(q || posterior) = 0 in expectation
    assert abs(float((elbo - exact).mean())) < 0.2


def test_iwae_estimate_approaches_the_exact_likelihood_as_k_grows():
    model, x, exact = ppca(mean_shift=0.7, var_scale=3.0)  # a poor q: the bound is loose at k = 1
    gaps = {}
    for k in (1, 10, 100, 1000):
        repeats = torch.stack(
            [model.log_likelihood(x, k, torch.Generator().manual_seed(1000 * k + r)) for r in range(8)]
        )
        gaps[k] = float((exact - repeats.mean(0)).mean())
    assert gaps[1] > 0.5, gaps
    assert gaps[1] > gaps[10] > gaps[100] > gaps[1000] >= 0.0, gaps
    assert gaps[1000] < 0.1 * gaps[1], gaps
    # the ELBO (analytic KL) is a lower bound: averaged over many draws it stays below log p(x) by ~gaps[1]
    with torch.no_grad():
        elbos = torch.stack(
            [model.objective(x, 1, 1.0, torch.Generator().manual_seed(r))["elbo"] for r in range(50)]
        ).mean(0)
    assert bool((elbos < exact).all())
    assert float((exact - elbos).mean()) == pytest.approx(gaps[1], rel=0.1)


def test_training_objective_matches_the_bounds():
    model, x, exact = ppca(mean_shift=0.7, var_scale=3.0)
    model.k = 50
    torch.set_grad_enabled(False)
    terms = model.objective(x, 50, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["loss"], -terms["iwae_bound"])
    assert float(terms["iwae_bound"].mean()) > float(terms["elbo"].mean())
    assert float(terms["iwae_bound"].mean()) < float(exact.mean())
    model.importance_weighted = False
    terms = model.objective(x, 50, 2.0, torch.Generator().manual_seed(0))
    torch.set_grad_enabled(True)
    torch.testing.assert_close(terms["loss"], -(terms["recon"] - 2.0 * terms["kl"]))


def test_iwae_bound_of_equal_weights_and_logsumexp():
    log_w = torch.log(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))
    torch.testing.assert_close(iwae_bound(log_w), torch.log(torch.tensor([2.0, 2.0])))


# --- ELBO terms against closed forms ---------------------------------------------------------------------


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_var = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(gaussian_kl_standard_normal(mean, log_var), expected)
    # and against a Monte-Carlo estimate E_q[log q - log p]
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(gaussian_kl_standard_normal(mean, log_var), mc, atol=0.03, rtol=0.01)


def test_bernoulli_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 4, 4, generator=g)
    x = (torch.rand(3, 1, 4, 4, generator=g) < 0.5).float()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)


def test_discretized_logistic_is_a_distribution_over_the_256_values():
    values = torch.arange(256.0) / 255.0
    for mean, log_scale in ((0.3, -3.0), (0.0, -1.0), (1.0, -5.0), (0.52, -8.0), (0.2, 1.0)):
        x = values.reshape(256, 1, 1, 1)
        log_p = discretized_logistic_log_prob(
            x, torch.full_like(x, mean), torch.full_like(x, log_scale), bins=256
        )
        assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-3), (mean, log_scale)
        if log_scale <= -3.0:  # narrow: the mode is the bin of the mean (wide ones pile mass in the end bins)
            assert int(log_p.argmax()) == round(mean * 255)
    # one inner bin by hand: P(x = 100/255) = sigmoid((x - m + 1/510) / s) - sigmoid((x - m - 1/510) / s)
    x, m, s = torch.tensor(100 / 255), torch.tensor(0.35), math.exp(-2.5)
    expected = torch.sigmoid((x - m + 0.5 / 255) / s) - torch.sigmoid((x - m - 0.5 / 255) / s)
    got = discretized_logistic_log_prob(x.reshape(1, 1), m.reshape(1, 1), torch.full((1, 1), -2.5)).exp()
    torch.testing.assert_close(got, expected.reshape(1))


def test_gaussian_likelihood_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, mean, log_var = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    expected = torch.distributions.Normal(mean, (0.5 * log_var).exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(
        Gaussian(learned_variance=True).log_prob(x, torch.cat([mean, log_var], 1)), expected
    )
    fixed = torch.distributions.Normal(mean, 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian(learned_variance=False, std=0.3).log_prob(x, mean), fixed)


# --- dynamic binarization ----------------------------------------------------------------------------------


def test_dynamic_binarization_statistics_and_seeding():
    intensities = torch.linspace(0.0, 1.0, 11).reshape(1, 1, 1, 11).expand(20_000, 1, 1, 11)
    a = dynamic_binarization(intensities, torch.Generator().manual_seed(1))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    frequency = a.mean(0).flatten()
    torch.testing.assert_close(frequency, intensities[0].flatten(), atol=0.015, rtol=0)
    assert frequency[0] == 0.0 and frequency[-1] == 1.0
    torch.testing.assert_close(a, dynamic_binarization(intensities, torch.Generator().manual_seed(1)))
    b = dynamic_binarization(intensities, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)
    # pixels are binarized independently: the correlation of two draws of the same grey pixel is ~0
    grey = intensities[:, 0, 0, 5]
    torch.testing.assert_close(
        float(torch.corrcoef(torch.stack([a[:, 0, 0, 5], b[:, 0, 0, 5]]))[0, 1]), 0.0, atol=0.03, rtol=0
    )
    assert float(grey[0]) == 0.5


def test_training_batches_are_rebinarized_every_batch_and_reproducibly():
    from lit_gen.nets.vae import MLPDecoder, MLPEncoder

    seen = []

    class Recording(Bernoulli):
        def prepare(self, x, rng=None, uniform=None):
            seen.append(super().prepare(x, rng, uniform))
            return seen[-1]

    model = VAE(MLPEncoder((1, 4, 4), (8,), 2), MLPDecoder(2, (8,), (1, 4, 4)), Recording(), noise_seed=3)
    x = torch.full((64, 1, 4, 4), 0.5)
    model.log_dict = model.log = lambda *a, **k: None
    for step in range(2):
        model.training_step((x, None), step)
    assert not torch.equal(seen[0], seen[1])
    assert abs(float(seen[0].mean()) - 0.5) < 0.1
    model.batches_seen.zero_()
    model.training_step((x, None), 0)
    assert torch.equal(seen[0], seen[2])


# --- configuration --------------------------------------------------------------------------------------------


def test_burda_schedule_is_3280_epochs_of_decaying_rates():
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3, eps=1e-4)
    scheduler = BurdaLR(opt)
    assert scheduler.total_epochs == 3280
    rates = []
    for _ in range(3281):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    boundaries = [0, 1, 4, 13, 40, 121, 364, 1093, 3280]
    for i in range(8):
        stage = rates[boundaries[i] : boundaries[i + 1]]
        assert len(stage) == 3**i
        assert all(r == pytest.approx(1e-3 * 10 ** (-i / 7)) for r in stage)
    assert rates[3280] == pytest.approx(1e-4)


def test_mismatched_decoder_and_likelihood_is_a_user_error():
    from lit_gen.errors import LitGenError
    from lit_gen.nets.vae import MLPDecoder, MLPEncoder

    with pytest.raises(LitGenError, match="params_per_pixel"):
        VAE(MLPEncoder(), MLPDecoder(params_per_pixel=1), likelihood=DiscretizedLogistic())
    with pytest.raises(LitGenError, match="latent_dim"):
        VAE(MLPEncoder(latent_dim=5), MLPDecoder(latent_dim=6))
    with pytest.raises(LitGenError, match="beta"):
        VAE(MLPEncoder(), MLPDecoder(), likelihood=Bernoulli(), k=5, beta=2.0)
    model = VAE(MLPEncoder(), MLPDecoder(), optimizer=lambda params: torch.optim.Adam(params, lr=-1.0))
    with pytest.raises(LitGenError, match="^model.optimizer: Invalid learning rate"):
        model.configure_optimizers()


# --- every VAE config: fit (fast_dev_run), a one-batch fit, test and sample ------------------------------------


def data_overrides(config: str, mnist_dir, cifar10_dir) -> list[str]:
    if "mnist" in config:
        return [f"--data.data_dir={mnist_dir}", "--data.download=false", "--data.num_workers=0"]
    if "cifar10" in config:
        return [
            f"--data.data_dir={cifar10_dir}",
            "--data.download=false",
            "--data.num_workers=0",
            "--data.batch_size=8",
        ]
    return []


VAE_CONFIGS = ["vae.yaml", "vae_mnist.yaml", "iwae_mnist.yaml", "beta_vae_mnist.yaml", "vae_cifar10.yaml"]


@pytest.mark.parametrize("config", VAE_CONFIGS)
def test_config_fits_tests_and_samples(config, cli, mnist_dir, cifar10_dir, request, tmp_path):
    from helpers.paths import CONFIGS
    from helpers.runs import run_dirs

    if "cifar10" in config:
        request.getfixturevalue("cifar10_skip_md5")
    # CSV only: the configs' W&B logger is tested elsewhere and starting its service costs seconds per run
    args = [
        "--config",
        CONFIGS / config,
        "--trainer.logger=CSVLogger",
        *data_overrides(config, mnist_dir, cifar10_dir),
    ]
    args += ["--model.init_args.val_k=3", "--model.init_args.test_k=4", "--model.init_args.chunk_size=2"]
    code, out, err = cli("fit", *args, "--trainer.fast_dev_run=true")
    assert code == 0, err[-2000:]

    code, out, err = cli(
        "fit",
        *args,
        "--trainer.max_epochs=1",
        "--trainer.max_steps=-1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",  # an int: 1 would mean 100%
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0",
    )
    assert code == 0, err[-2000:]
    run = run_dirs()[-1]  # the newest run directory (names are time stamps)
    ckpt = run / "checkpoints" / "last.ckpt"
    metrics = next(run.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"train/elbo", "train/recon", "train/kl", "train/beta", "val/elbo", "val/bpd"} <= set(metrics)
    if "iwae" in config:
        assert "train/iwae_bound" in metrics

    code, out, err = cli("test", *args, f"--ckpt_path={ckpt}", "--trainer.limit_test_batches=2")
    assert code == 0, err[-2000:]
    assert "test/nll" in out and "test/bpd" in out

    code, out, err = cli("sample", "--ckpt_path", ckpt, "--num_samples", 16, "--out_dir", tmp_path / "s")
    assert code == 0, err[-2000:]
    samples = torch.load(tmp_path / "s" / "samples.pt")
    assert samples.dim() == 4 and samples.shape[0] == 16
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0
    assert (tmp_path / "s" / "grid.png").is_file() and (tmp_path / "s" / "reconstructions.png").is_file()


def test_config_mistakes_are_one_line_errors(cli):
    from helpers.paths import CONFIGS

    config = ["fit", "--config", CONFIGS / "vae.yaml"]
    code, out, err = cli(*config, "--model.init_args.likelihood=lit_gen.likelihoods.DiscretizedLogistic")
    assert code == 2 and err.count("lit_gen: error:") == 1 and "params_per_pixel" in err, err[-1000:]
    code, out, err = cli(*config, "--model.init_args.k=0")
    assert code == 2 and "model.k" in err, err[-1000:]
    code, out, err = cli(*config, "--model.init_args.k=5", "--model.init_args.beta=4")
    assert code == 2 and "model.beta" in err, err[-1000:]
    assert "Traceback" not in err


def test_kl_warmup_rises_linearly_to_beta():
    from lit_gen.nets.vae import MLPDecoder, MLPEncoder

    model = VAE(
        MLPEncoder((1, 4, 4), (8,), 2), MLPDecoder(2, (8,), (1, 4, 4)), beta=4.0, kl_warmup_batches=100
    )
    for batches, expected in ((0, 0.0), (25, 1.0), (50, 2.0), (100, 4.0), (1000, 4.0)):
        model.batches_seen.fill_(batches)
        assert model.beta_now == pytest.approx(expected)
    x = (torch.rand(8, 1, 4, 4) < 0.5).float()
    model.batches_seen.fill_(50)
    with torch.no_grad():
        terms = model.objective(x, 1, model.beta_now, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["loss"], -(terms["recon"] - 2.0 * terms["kl"]))


@pytest.mark.parametrize(
    ("likelihood", "discrete"),
    [
        (Bernoulli(binarize=True), True),
        (DiscretizedLogistic(), True),
        (Bernoulli(binarize=False), False),
        (Gaussian(learned_variance=True), False),
        (Gaussian(learned_variance=False, std=0.1), False),
    ],
)
@pytest.mark.parametrize("val_k", [0, 2])
def test_bits_per_dim_are_logged_only_for_discrete_likelihoods(likelihood, discrete, val_k):
    from lit_gen.nets.vae import MLPDecoder, MLPEncoder

    torch.manual_seed(0)
    decoder = MLPDecoder(2, (8,), (1, 4, 4), params_per_pixel=likelihood.params_per_pixel)
    model = VAE(MLPEncoder((1, 4, 4), (8,), 2), decoder, likelihood=likelihood, val_k=val_k, chunk_size=2)
    logged = {}
    model.log = lambda key, value, **kwargs: logged.update({key: value})
    model.log_dict = lambda values, **kwargs: logged.update(values)
    with torch.no_grad():
        model.validation_step(torch.rand(4, 1, 4, 4), 0)
    assert {"val/elbo", "val/recon", "val/kl"} <= set(logged)
    assert ("val/nll" in logged) == (val_k > 0)
    # a density's NLL is no code length: 8-bit data in [0, 1] would be off by 8 bits/dim
    assert ("val/bpd" in logged) == discrete
    if discrete:
        nll = logged["val/nll"] if val_k else -logged["val/elbo"]
        torch.testing.assert_close(logged["val/bpd"], nll / (16 * math.log(2)))
