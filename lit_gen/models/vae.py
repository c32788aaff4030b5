"""The VAE family: VAE (Kingma & Welling 2014), β-VAE (Higgins et al. 2017) with KL warm-up (Sønderby et al.
2016), and the importance-weighted autoencoder (IWAE, Burda et al. 2015), with the importance-sampled
negative log-likelihood estimate used to report results.

The decoder's likelihood p(x | z) is a small class chosen in the config (``lit_gen.likelihoods``:
``Bernoulli``, ``Gaussian``, ``DiscretizedLogistic``).

Randomness (binarization, reparameterization noise) is a pure function of (noise_seed, stream, batch): a
resumed run draws exactly what the uninterrupted run would have, and validation/test use the same draws every
time. Training noise is drawn for the *global* batch and each DDP rank takes its samples' rows
(``GenerativeModule.batch_noise``), so ``n`` processes with batch ``b`` train on the noise one process with
batch ``n * b`` trains on. Validation/test noise also depends on the stage and the rank (per-rank generators,
``evaluation_rng``): they only report metrics, from each rank's own shard of the evaluation set, so no
single-process run is matched.

Units: ``elbo``, ``recon`` (E_q[log p(x|z)]) and ``iwae_bound`` are log-likelihood bounds in nats per
example (negative numbers for discrete data); ``kl`` and ``nll`` are positive nats; ``bpd`` is
``nll / (D ln 2)`` with D the number of pixel values per image, logged only for a likelihood of discrete data
(``Likelihood.discrete``: binarized Bernoulli, discretized logistic).
"""

from __future__ import annotations

import math
from enum import IntEnum

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_gen.errors import LitGenError
from lit_gen.likelihoods import Bernoulli, Likelihood
from lit_gen.losses import bits_per_dim, gaussian_kl_standard_normal, importance_log_weights, iwae_bound
from lit_gen.models.base import GenerativeModule
from lit_gen.utils import derived_seed, eval_mode, rng_on


def _adam_burda(params) -> torch.optim.Optimizer:
    """Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-4), Burda et al.'s setting."""
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-4)


class NoiseStream(IntEnum):
    """The VAE's noise: the binarization of the data and the reparameterization's eps."""

    BINARIZATION = 0
    REPARAMETERIZATION = 1


class EvaluationStage(IntEnum):
    """The evaluation stages, each with its own noise."""

    VALIDATION = 0
    TEST = 1


class VAE(GenerativeModule):
    """A VAE with a diagonal-Gaussian encoder, a standard-normal prior and a configurable likelihood.

    Training objective: with ``k = 1`` the β-weighted ELBO E_q[log p(x|z)] - β_t KL(q(z|x) || p(z)) (analytic
    KL); with ``k > 1`` and ``importance_weighted`` the IWAE bound log (1/k) sum_i p(x, z_i) / q(z_i | x);
    with ``k > 1`` and not ``importance_weighted`` the ELBO averaged over k samples (Burda et al.'s "VAE, k").

    Args:
        encoder: images -> (mean, log_var) of q(z | x), with a ``latent_dim`` attribute.
        decoder: latents -> likelihood parameters (N, params_per_pixel * C, H, W), with ``latent_dim``.
        likelihood: p(x | z) (``lit_gen.likelihoods``: ``Bernoulli``, ``Gaussian``, ``DiscretizedLogistic``).
        k: importance samples per example in the training objective.
        importance_weighted: with k > 1, train the IWAE bound (True) or the k-sample ELBO (False).
        beta: weight of the KL term (β-VAE); only with the ELBO objective.
        kl_warmup_batches: β_t rises linearly from 0 to ``beta`` over this many training batches (0: none).
        val_k: importance samples of the NLL estimate logged in validation (0 skips it).
        test_k: importance samples of the NLL estimate in ``test`` (5,000 in Burda et al.).
        chunk_size: importance samples evaluated per forward pass in the NLL estimate (bounds memory:
            a pass decodes ``chunk_size * batch_size`` latents).
        optimizer: injected from the config; default Adam(1e-3, (0.9, 0.999), eps=1e-4) as Burda et al.
        lr_scheduler: optional, e.g. ``lit_gen.optim.BurdaLR`` (stepped per epoch).
        noise_seed: base seed of binarization and latent noise; None takes the seed set by ``seed_everything``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood = lazy_instance(Bernoulli),
        k: int = 1,
        importance_weighted: bool = True,
        beta: float = 1.0,
        kl_warmup_batches: int = 0,
        val_k: int = 100,
        test_k: int = 5000,
        chunk_size: int = 500,
        optimizer: OptimizerCallable = _adam_burda,
        lr_scheduler: LRSchedulerCallable | None = None,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(noise_seed)
        if k < 1:
            raise LitGenError(f"model.k must be a positive integer, got {k}")
        if beta < 0:
            raise LitGenError(f"model.beta must be >= 0, got {beta}")
        if kl_warmup_batches < 0:
            raise LitGenError(f"model.kl_warmup_batches must be >= 0, got {kl_warmup_batches}")
        if k > 1 and importance_weighted and (beta != 1.0 or kl_warmup_batches):
            raise LitGenError(
                "model.beta: the IWAE bound (k > 1, importance_weighted) has no KL weight; "
                "use k: 1 (or importance_weighted: false) for a β-VAE or KL warm-up"
            )
        if val_k < 0 or test_k < 1 or chunk_size < 1:
            raise LitGenError(
                f"model.val_k must be >= 0 and model.test_k, model.chunk_size >= 1, got {val_k}, {test_k}, "
                f"{chunk_size}"
            )
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            if not hasattr(net, "latent_dim"):
                raise LitGenError(f"model.{name} {type(net).__name__} has no `latent_dim` attribute")
        if encoder.latent_dim != decoder.latent_dim:
            raise LitGenError(
                f"model.decoder.latent_dim ({decoder.latent_dim}) must equal model.encoder.latent_dim "
                f"({encoder.latent_dim})"
            )
        decoder_params = getattr(decoder, "params_per_pixel", 1)
        if decoder_params != likelihood.params_per_pixel:
            raise LitGenError(
                f"model.decoder.params_per_pixel is {decoder_params} but the likelihood "
                f"{type(likelihood).__name__} reads {likelihood.params_per_pixel} parameters per pixel"
            )
        self.save_hyperparameters_without_modules()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = int(encoder.latent_dim)
        self.k, self.importance_weighted = k, importance_weighted
        self.beta, self.kl_warmup_batches = beta, kl_warmup_batches
        self.val_k, self.test_k, self.chunk_size = val_k, test_k, chunk_size
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler

    def configure_optimizers(self):
        return self.optimizer_config(self.optimizer, self.parameters(), self.lr_scheduler)

    # --- noise -----------------------------------------------------------------------------------------------

    def evaluation_rng(self, stage: EvaluationStage, stream: NoiseStream, batch_idx: int) -> torch.Generator:
        """A generator on this module's device for (stage, stream, rank, batch) in validation and test."""
        seed = derived_seed(self.noise_seed, stage, stream, self.global_rank, batch_idx)
        return torch.Generator(device=self.device).manual_seed(seed)

    @property
    def beta_now(self) -> float:
        """β_t: ``beta`` after warm-up, linear in the training batches before."""
        if self.kl_warmup_batches == 0:
            return self.beta
        return self.beta * min(1.0, float(self.batches_seen) / self.kl_warmup_batches)

    # --- the model -------------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_var) of q(z | x), each (N, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters for latents (..., latent_dim) -> (prod(...), params_per_pixel * C, H, W)."""
        return self.decoder(z.reshape(-1, self.latent_dim))

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) for data x (N, C, H, W) and latents z (k, N, latent_dim) -> (k, N)."""
        k, n = z.shape[:2]
        params = self.decode(z)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:])
        return self.likelihood.log_prob(x_rep, params).reshape(k, n)

    @staticmethod
    def reparameterize(
        mean: Tensor, log_var: Tensor, k: int, rng: torch.Generator | None = None, eps: Tensor | None = None
    ) -> Tensor:
        """z = mean + exp(log_var / 2) * eps (k, N, latent_dim), with ``eps`` given or drawn ~ N(0, I) from
        ``rng`` (created on mean's device)."""
        if eps is None:
            eps = torch.randn((k, *mean.shape), generator=rng, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * log_var).exp() * eps

    def objective(
        self, x: Tensor, k: int, beta: float, rng: torch.Generator | None = None, eps: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The training objective and its terms, per example (N,): ``loss`` (to minimise), ``elbo``,
        ``recon``, ``kl`` and, with k > 1 and importance weighting, ``iwae_bound``. The reparameterization
        noise is ``eps`` (k, N, latent_dim) when given, else drawn from ``rng``."""
        mean, log_var = self.encode(x)
        z = self.reparameterize(mean, log_var, k, rng, eps)
        log_px = self.log_px_given_z(x, z)
        recon = log_px.mean(0)
        kl = gaussian_kl_standard_normal(mean, log_var)
        terms = {"elbo": recon - kl, "recon": recon, "kl": kl}
        if k > 1 and self.importance_weighted:
            terms["iwae_bound"] = iwae_bound(importance_log_weights(log_px, z, mean, log_var))
            terms["loss"] = -terms["iwae_bound"]
        else:
            terms["loss"] = -(recon - beta * kl)
        return terms

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int, rng: torch.Generator | None = None) -> Tensor:
        """The importance-sampled estimate of log p(x) with k samples from q(z | x) (the IWAE bound at k;
        Burda et al. report -log p(x) with k = 5,000), in ``chunk_size`` pieces; per example (N,)."""
        mean, log_var = self.encode(x)
        pieces = []
        for start in range(0, k, self.chunk_size):
            count = min(self.chunk_size, k - start)
            z = self.reparameterize(mean, log_var, count, rng)
            log_w = importance_log_weights(self.log_px_given_z(x, z), z, mean, log_var)
            pieces.append(torch.logsumexp(log_w, dim=0))
        return torch.logsumexp(torch.stack(pieces), dim=0) - math.log(k)

    # --- training and evaluation -----------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        images = self.batch_data(batch)
        uniform = self.batch_noise(NoiseStream.BINARIZATION, images.shape, torch.rand).to(images)
        x = self.likelihood.prepare(images, uniform=uniform)
        beta = self.beta_now
        eps = self.batch_noise(
            NoiseStream.REPARAMETERIZATION, (self.k, images.shape[0], self.latent_dim), batch_dim=1
        )
        terms = self.objective(x, self.k, beta, eps=eps)
        loss = terms["loss"].mean()
        self.batches_seen += 1
        logs = {f"train/{key}": value.detach().mean() for key, value in terms.items()}
        if self.logs_this_batch(batch_idx):  # only where a logger writes (a log call costs ~0.3 ms)
            synced = self.mean_over_ranks(logs)  # the global batch's means under DDP
            self.log_dict({**synced, "train/beta": beta}, batch_size=x.shape[0])
            self.log("loss", synced["train/loss"], prog_bar=True, logger=False, batch_size=x.shape[0])
        # the loss terms for callbacks (``outputs``) too: NonFiniteGuard checks them on every batch
        return {"loss": loss, **logs}

    def _evaluate(self, batch, batch_idx: int, stage: EvaluationStage, prefix: str, k: int) -> None:
        x = self.likelihood.prepare(
            self.batch_data(batch), self.evaluation_rng(stage, NoiseStream.BINARIZATION, batch_idx)
        )
        rng = self.evaluation_rng(stage, NoiseStream.REPARAMETERIZATION, batch_idx)
        terms = self.objective(x, 1, 1.0, rng)
        logs = {f"{prefix}/{key}": terms[key].mean() for key in ("elbo", "recon", "kl")}
        nll = -logs[f"{prefix}/elbo"]
        if k > 0:
            nll = -self.log_likelihood(x, k, rng).mean()
            logs[f"{prefix}/nll"] = nll
        if self.likelihood.discrete:  # a density's NLL is no code length: no bits/dim for it
            logs[f"{prefix}/bpd"] = bits_per_dim(nll, x[0].numel())
        headline = f"{prefix}/nll" if k > 0 else f"{prefix}/elbo"  # the one shown in the progress bar
        self.log(headline, logs.pop(headline), batch_size=x.shape[0], sync_dist=True, prog_bar=True)
        self.log_dict(logs, batch_size=x.shape[0], sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, EvaluationStage.VALIDATION, "val", self.val_k)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, EvaluationStage.TEST, "test", self.test_k)

    # --- sampling --------------------------------------------------------------------------------------------

    def generate(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        """Prior samples shown as the likelihood's mean E[x | z], z ~ N(0, I) (Bernoulli: probabilities)."""
        z = torch.randn(num_samples, self.latent_dim, generator=rng).to(self.device)
        with eval_mode(self):
            return self.likelihood.mean(self.decode(z)).float()

    def reconstruct(self, x: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """E[x | z = mean of q(z | x)] for images in [0, 1] (binarized first when the likelihood binarizes)."""
        x = x.to(self.device)
        with eval_mode(self):
            x = self.likelihood.prepare(x, rng_on(rng, x.device))
            mean, _ = self.encode(x)
            return self.likelihood.mean(self.decode(mean)).float()

    def forward(self, z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decode(z))
