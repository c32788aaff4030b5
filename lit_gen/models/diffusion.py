"""The Gaussian-path family: diffusion (EDM, DDPM) and flow matching in one module, its parts chosen in the config.

A ``path`` (``lit_gen.diffusion.paths``: ``EDM``, ``VP``, ``FlowMatching``) says how data is noised, what the net
predicts and how its output becomes a denoiser; a ``sampler`` (``lit_gen.diffusion.samplers``) turns any path's
denoiser into samples. One training step (Karras et al. 2022, eq. 2; Ho et al. 2020, Algorithm 1; Lipman et al.
2023, eq. 23)::

    t ~ the path's training distribution, noise ~ N(0, I) (paired with the data by minibatch OT for OT-CFM)
    loss = path.loss(net(*path.model_input(alpha(t) data + sigma(t) noise, t), labels), data, noise, t).mean()

Images cross this module's boundary in [0, 1] (data, ``generate``) and live in [-1, 1] inside it; 2-D points are
used as they are. A net with ``num_classes`` is class-conditional: training replaces each label by the null
class with probability ``label_dropout`` and sampling guides with classifier-free guidance
(``lit_gen.diffusion.guidance``: weight 0 unconditional, 1 conditional, > 1 beyond).

Noise (t, the Gaussian noise, the label dropout) comes from the named streams of ``NoiseStream``, drawn for the
*global* batch; DDP rank ``r`` of ``n`` takes rows ``r, r + n, ...`` (``GenerativeModule.batch_noise``), so a resumed run draws what the uninterrupted one would have and ``n``
processes with batch ``b`` draw what one process with batch ``n * b`` draws. The OT coupling pairs noise and data
within each rank's batch.
"""

from __future__ import annotations

import copy
import math
from enum import IntEnum

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_gen.diffusion.guidance import GuidedDenoiser
from lit_gen.diffusion.likelihood import bits_per_dim, ode_log_likelihood, standard_normal_log_prob
from lit_gen.diffusion.paths import EDM, GaussianPath
from lit_gen.diffusion.samplers import Sampler
from lit_gen.ema import EMA
from lit_gen.errors import LitGenError
from lit_gen.models.base import GenerativeModule
from lit_gen.utils import eval_mode, rng_on


def _adam_ddpm(params) -> torch.optim.Optimizer:
    """Adam(lr=2e-4), Ho et al. 2020's CIFAR-10 setting."""
    return torch.optim.Adam(params, lr=2e-4)


class NoiseStream(IntEnum):
    """The training noise of a batch: the noise level t, the Gaussian noise, the label dropout."""

    NOISE_LEVEL = 0
    NOISE = 1
    LABEL_DROPOUT = 2


#: data with at most this many dimensions gets the exact divergence in ``log_likelihood`` (else Hutchinson's)
EXACT_DIVERGENCE_MAX_DIMS = 16


class Diffusion(GenerativeModule):
    """A net trained on a Gaussian path, sampled with a sampler, with EMA, class conditioning and guidance.

    Args:
        net: ``forward(x, t, labels=None)`` with attributes ``sample_shape`` (one sample's shape) and
            ``num_classes`` (None: unconditional), e.g. ``lit_gen.nets.UNet``, ``lit_gen.nets.TimeMLP``.
        path: the Gaussian path and parameterisation (``lit_gen.diffusion.EDM``, ``VP``, ``FlowMatching``).
        sampler: the default sampler of ``generate``; None: the path's own (``path.default_sampler()``: EDM's
            Heun with 18 steps = 35 NFE, DDPM's ancestral sampler through all T steps, flow matching's Euler
            with 100 steps).
        optimizer: injected from the config; default Adam(lr=2e-4) (Ho et al.).
        lr_scheduler: optional, stepped after every optimizer step (e.g. a linear warm-up).
        ema_decay: decay of the net's exponential moving average, which samples; None samples the live net.
        ema_rampup: the EMA's half-life is at most this fraction of the updates so far (``lit_gen.ema.EMA``);
            None: ``ema_decay`` from the first update.
        label_dropout: probability of training on the null class instead of the label (classifier-free
            guidance); None: 0.1 for a conditional net (Ho & Salimans 2022), 0 otherwise.
        guidance: the default guidance weight of ``generate`` for a conditional net (1: no guidance).
        noise_seed: base seed of the training noise; None takes the seed set by ``seed_everything``.
    """

    def __init__(
        self,
        net: nn.Module,
        path: GaussianPath = lazy_instance(EDM),
        sampler: Sampler | None = None,
        optimizer: OptimizerCallable = _adam_ddpm,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float | None = 0.9999,
        ema_rampup: float | None = 0.05,
        label_dropout: float | None = None,
        guidance: float = 1.0,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(noise_seed)
        for attribute in ("sample_shape", "num_classes"):
            if not hasattr(net, attribute):
                raise LitGenError(f"model.net {type(net).__name__} has no `{attribute}` attribute")
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise LitGenError(f"model.ema_decay must be in [0, 1) or null, got {ema_decay}")
        if ema_rampup is not None and ema_rampup <= 0:
            raise LitGenError(f"model.ema_rampup must be positive or null, got {ema_rampup}")
        self.num_classes: int | None = net.num_classes
        if label_dropout is None:
            label_dropout = 0.1 if self.num_classes is not None else 0.0
        if not 0.0 <= label_dropout < 1.0:
            raise LitGenError(f"model.label_dropout must be in [0, 1) or null, got {label_dropout}")
        if label_dropout > 0 and self.num_classes is None:
            raise LitGenError("model.label_dropout: the net is unconditional (num_classes: null)")
        if guidance < 0:
            raise LitGenError(f"model.guidance must be >= 0, got {guidance}")
        self.save_hyperparameters_without_modules()
        self.net, self.path = net, path
        self.sampler = sampler if sampler is not None else path.default_sampler()
        self.sample_shape = tuple(int(d) for d in net.sample_shape)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.label_dropout, self.guidance = label_dropout, guidance
        self.net_ema = EMA(net, ema_decay, ema_rampup) if ema_decay is not None else None
        #: network evaluations of the last ``generate`` call
        self.last_nfe = 0

    @staticmethod
    def unpack(batch) -> tuple[Tensor, Tensor | None]:
        """(data, labels or None) of a batch."""
        if isinstance(batch, (list, tuple)):
            return batch[0], batch[1] if len(batch) > 1 else None
        return batch, None

    def configure_optimizers(self):
        return self.optimizer_config(
            self.optimizer, self.net.parameters(), self.lr_scheduler, interval="step"
        )

    # --- data space --------------------------------------------------------------------------------------------

    @property
    def is_image_model(self) -> bool:
        return len(self.sample_shape) == 3

    def to_model_space(self, x: Tensor) -> Tensor:
        return x * 2.0 - 1.0 if self.is_image_model else x

    def to_data_space(self, x: Tensor) -> Tensor:
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0) if self.is_image_model else x

    # --- training ----------------------------------------------------------------------------------------------

    def training_labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        """The labels the net is trained on: each replaced by the null class with probability ``label_dropout``."""
        if self.num_classes is None:
            return None
        if labels is None:
            raise LitGenError("model.net is class-conditional (num_classes set) but the data has no labels")
        if self.label_dropout == 0:
            return labels
        drop = self.batch_noise(NoiseStream.LABEL_DROPOUT, (n,), torch.rand) < self.label_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        data, labels = self.unpack(batch)
        data = self.to_model_space(data)
        n = data.shape[0]
        t = self.batch_noise(
            NoiseStream.NOISE_LEVEL,
            (n,),
            lambda shape, generator: self.path.sample_training_noise_level(shape[0], generator),
        )
        noise = self.path.couple(data, self.batch_noise(NoiseStream.NOISE, data.shape).to(data))
        labels = self.training_labels(labels, n)
        x_t = self.path.noisy(data, noise, t)
        output = self.net(*self.path.model_input(x_t, t), labels=labels).float()
        loss = self.path.loss(output, data, noise, t).mean()
        self.batches_seen += 1
        if self.logs_this_batch(batch_idx):  # only where a logger writes (a log call costs ~0.3 ms)
            # the global batch's loss under DDP (the ranks' mean), as the GAN logs its losses
            global_loss = self.mean_over_ranks({"loss": loss.detach()})["loss"]
            self.log("train/loss", global_loss, batch_size=n)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
            self.log("loss", global_loss, prog_bar=True, logger=False, batch_size=n)
        # the loss terms for callbacks (``outputs``) too: NonFiniteGuard checks them on every batch
        return {"loss": loss, "train/loss": loss.detach()}

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.net_ema is not None:
            self.net_ema.update(self.net)

    # --- sampling ----------------------------------------------------------------------------------------------

    @property
    def sampling_net(self) -> nn.Module:
        """The network that samples: the EMA's when there is one."""
        return self.net_ema.module if self.net_ema is not None else self.net

    def configured_sampler(self, sampler: Sampler | None = None, steps: int | None = None) -> Sampler:
        """``sampler`` (default: the module's) with ``steps`` steps when given."""
        sampler = self.sampler if sampler is None else sampler
        if steps is None:
            return sampler
        if not hasattr(sampler, "steps"):
            raise LitGenError(f"steps: the {type(sampler).__name__} sampler has no number of steps to set")
        if steps < 2:
            raise LitGenError(f"steps must be an integer >= 2, got {steps}")
        sampler = copy.copy(sampler)
        sampler.steps = steps
        return sampler

    def sampling_labels(self, num_samples: int, labels: Tensor | list[int] | int | None) -> Tensor:
        """Class labels for ``num_samples`` samples: ``labels`` (one class, or a list cycled over the samples);
        None: the classes in turn (0, 1, ..., K-1, 0, ...)."""
        k = self.num_classes
        if labels is None:
            labels = list(range(k))
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(labels) == 0 or bool(((labels < 0) | (labels >= k)).any()):
            raise LitGenError(f"labels: expected classes in 0..{k - 1}, got {labels.tolist()}")
        return labels.repeat(-(-num_samples // len(labels)))[:num_samples].to(self.device)

    def denoiser(self, net: nn.Module, num_samples: int, guidance: float | None, labels) -> object:
        """D(x, alpha, sigma) for the samplers: the path's denoiser of ``net``, guided for a conditional net."""
        denoise = self.path.denoiser(net)
        if self.num_classes is None:
            if labels is not None:
                raise LitGenError("labels: the model is unconditional (its net has no num_classes)")
            if guidance is not None:
                raise LitGenError("guidance: the model is unconditional (its net has no num_classes)")
            return denoise
        weight = self.guidance if guidance is None else guidance
        if weight < 0:
            raise LitGenError(f"guidance must be >= 0, got {weight}")
        return GuidedDenoiser(denoise, self.sampling_labels(num_samples, labels), weight, self.num_classes)

    def generate(
        self,
        num_samples: int,
        rng: torch.Generator | None = None,
        *,
        sampler: Sampler | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        labels: Tensor | list[int] | int | None = None,
        ema: bool = True,
    ) -> Tensor:
        """``num_samples`` samples in data space from the EMA net (``ema``), with ``sampler`` (default: the
        module's) and ``steps``; a conditional net samples ``labels`` (default: the classes in turn) guided with
        weight ``guidance`` (default: the module's). ``last_nfe`` is set to the network evaluations used."""
        sampler = self.configured_sampler(sampler, steps)
        net = self.sampling_net if ema else self.net
        denoise = self.denoiser(net, num_samples, guidance, labels)
        noise = torch.randn((num_samples, *self.sample_shape), generator=rng).to(self.device)
        with eval_mode(net), torch.autocast(self.device.type, enabled=False):
            x = sampler(denoise, noise, rng_on(rng, self.device))
        self.last_nfe = sampler.nfe
        return self.to_data_space(x).float()

    # --- likelihood --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        exact: bool | None = None,
        steps: int = 100,
        labels: Tensor | None = None,
        rng: torch.Generator | None = None,
    ) -> Tensor:
        """log p(x) per sample, nats, of the EMA net's probability-flow ODE (``lit_gen.diffusion.likelihood``),
        as a density of ``x`` in data space (images in [0, 1]). ``exact``: the exact divergence (default for
        data of at most ``EXACT_DIVERGENCE_MAX_DIMS`` dimensions) or Hutchinson's estimate; ``steps`` RK4 steps;
        ``labels``: the class of each sample (default: the null class, i.e. the unconditional model)."""
        net, path = self.sampling_net, self.path
        x = self.to_model_space(x.to(self.device).float())
        dims = x[0].numel()
        if exact is None:
            exact = dims <= EXACT_DIVERGENCE_MAX_DIMS
        if self.num_classes is not None and labels is None:
            labels = torch.full((len(x),), self.num_classes, dtype=torch.long, device=self.device)
        velocity = path.velocity_fn(net, labels=labels)
        _, _, prior_std = path.ode_span()

        def velocity_in_u(x_u: Tensor, u: Tensor) -> Tensor:
            t, dt_du = path.ode_time(u)
            return velocity(x_u, t) * dt_du.reshape(-1, *([1] * (x_u.dim() - 1)))

        def prior_log_prob(z: Tensor) -> Tensor:
            return standard_normal_log_prob(z / prior_std) - dims * math.log(prior_std)

        with eval_mode(net), torch.autocast(self.device.type, enabled=False):
            log_p = ode_log_likelihood(
                velocity_in_u,
                x,
                0.0,
                1.0,
                steps,
                prior_log_prob,
                "exact" if exact else "hutchinson",
                rng_on(rng, self.device),
            )
        # images: the density of x in [0, 1] is 2^D that of 2x - 1 in [-1, 1]
        return log_p + dims * math.log(2.0) if self.is_image_model else log_p

    def bits_per_dim(self, images: Tensor, steps: int = 100, rng: torch.Generator | None = None) -> Tensor:
        """Bits/dim per image of 8-bit images (values k/255 in [0, 1]): uniformly dequantised into 256 bins of
        [0, 1], so -log2 P(image) / D <= bits_per_dim (Ho et al. 2020's and Song et al. 2021's protocol)."""
        if not self.is_image_model:
            raise LitGenError("bits_per_dim: only for 8-bit images; use log_likelihood for points")
        levels = (images.float() * 255).round()
        u = torch.rand(levels.shape, generator=rng).to(levels)
        log_p = self.log_likelihood((levels + u) / 256, steps=steps, rng=rng)
        return bits_per_dim(log_p, images[0].numel(), bin_width=1 / 256)
