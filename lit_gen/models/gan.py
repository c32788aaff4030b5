"""The GAN family: a generator and a discriminator trained with manual optimization.

One training step consumes one batch of real data and makes one discriminator step; every ``n_critic``-th batch
also makes one generator step. Lightning's ``trainer.global_step`` counts *optimizer* steps, so a batch with
both a D and a G step advances it by 2: with ``n_critic = k``, ``k`` batches advance it by ``k + 1``. The
shipped configs set ``trainer.max_steps`` accordingly and say so in a comment.

Images cross this module's boundary in [0, 1] (data and ``generate``) and live in [-1, 1] inside it (tanh
generators). Latents come from a CPU ``torch.Generator`` seeded from (noise_seed, stream, batch): each batch
draws the latents of the *global* batch and DDP rank ``r`` of ``n`` takes every ``n``-th row from row ``r``
(``GenerativeModule.batch_noise``: its samples' rows, as ``ResumableSampler`` shards), so ranks never share
latents, a resumed run draws exactly the latents the uninterrupted run would have, and ``n`` processes with
per-process batch ``b`` train on the same latents as one process with batch ``n * b``.

Under DDP both players live in one ``DistributedDataParallel`` module and each batch makes two backward
passes, each touching only one player's parameters; ``setup`` therefore turns on DDP's
``find_unused_parameters`` (plain ``--trainer.strategy ddp`` works; see README "Scale and reliability").
Mixed precision: Lightning's precision plugin owns one GradScaler (``16-mixed``) that both optimizers share;
``gradient_clip_val`` clips in ``on_before_optimizer_step``, i.e. after the scaler has unscaled the gradients.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_gen._lightning import ddp_kwargs
from lit_gen.ema import EMA
from lit_gen.errors import LitGenError
from lit_gen.losses import AdversarialLoss, NonSaturating, Penalty
from lit_gen.models.base import GenerativeModule
from lit_gen.optim import make_optimizer
from lit_gen.utils import eval_mode


def _adam_dcgan(params) -> torch.optim.Optimizer:
    """Adam(lr=2e-4, betas=(0.5, 0.999)), the DCGAN paper's setting for both players."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


#: forward passes (and latents per pass) that recompute the EMA generator's BatchNorm statistics
EMA_STATISTICS_BATCHES, EMA_STATISTICS_BATCH_SIZE = 8, 128


class NoiseStream(IntEnum):
    """The GAN's training noise: the latents (one G forward serves both players) and the gradient penalty's
    interpolation weights."""

    LATENTS = 0
    PENALTY_MIX = 1


class GAN(GenerativeModule):
    """A two-player GAN with configurable objective, penalty, n_critic, PacGAN packing and generator EMA.

    Args:
        generator: maps latents ``(N, generator.latent_dim)`` to data (tanh images or points).
        discriminator: maps a (packed) batch of data to one logit per packed sample.
        loss: the adversarial objective (``lit_gen.losses.NonSaturating``, ``Hinge``, ``Wasserstein``...).
        penalty: optional regulariser of D (``lit_gen.losses.WGANGP``, ``lit_gen.losses.R1``).
        n_critic: discriminator steps (batches) per generator step.
        pack: PacGAN packing degree: D sees ``pack`` samples concatenated along the channel/feature axis
            (gradient penalties are taken with respect to these packed inputs).
        ema_decay: decay of the generator's exponential moving average, used for sampling; None disables it.
        ema_rampup: ramps the EMA's half-life up with training (StyleGAN2-ADA's ``ema_rampup``): at generator
            step ``t`` the half-life is ``min(h, ema_rampup * t)`` steps, ``h`` that of ``ema_decay``: never
            more than this fraction of the steps so far (the first update copies the weights); None:
            ``ema_decay`` from the first step.
        generator_optimizer / discriminator_optimizer: each player's optimizer (injected from the config).
        generator_lr_scheduler / discriminator_lr_scheduler: optional schedulers, stepped after each step of
            their player.
        noise_seed: base seed of the latent noise; None takes the seed set by ``seed_everything``.
        gradient_clip_val: clip each player's gradients to this norm (or value) before its step; None: off.
            (Lightning's ``trainer.gradient_clip_val`` is not available with manual optimization.)
        gradient_clip_algorithm: ``norm`` (total L2 norm per player) or ``value``.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: AdversarialLoss = lazy_instance(NonSaturating),
        penalty: Penalty | None = None,
        n_critic: int = 1,
        pack: int = 1,
        ema_decay: float | None = 0.999,
        ema_rampup: float | None = 0.05,
        generator_optimizer: OptimizerCallable = _adam_dcgan,
        discriminator_optimizer: OptimizerCallable = _adam_dcgan,
        generator_lr_scheduler: LRSchedulerCallable | None = None,
        discriminator_lr_scheduler: LRSchedulerCallable | None = None,
        noise_seed: int | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
    ) -> None:
        super().__init__(noise_seed)
        if n_critic < 1:
            raise LitGenError(f"model.n_critic must be a positive integer, got {n_critic}")
        if pack < 1:
            raise LitGenError(f"model.pack must be a positive integer, got {pack}")
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise LitGenError(f"model.ema_decay must be in [0, 1) or null, got {ema_decay}")
        if ema_rampup is not None and ema_rampup <= 0:
            raise LitGenError(f"model.ema_rampup must be positive or null, got {ema_rampup}")
        if not hasattr(generator, "latent_dim"):
            raise LitGenError(f"model.generator {type(generator).__name__} has no `latent_dim` attribute")
        self.save_hyperparameters_without_modules()
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.loss = loss
        self.penalty = penalty
        self.n_critic = n_critic
        self.pack = pack
        self.latent_dim = int(generator.latent_dim)
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.generator_lr_scheduler = generator_lr_scheduler
        self.discriminator_lr_scheduler = discriminator_lr_scheduler
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise LitGenError(f"model.gradient_clip_val must be positive or null, got {gradient_clip_val}")
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.ema_decay, self.ema_rampup = ema_decay, ema_rampup
        self.generator_ema = EMA(generator, ema_decay, ema_rampup) if ema_decay is not None else None
        # the latest generator step's loss, logged on logging batches without a generator step
        self._last_g_loss: Tensor | None = None

    # --- distributed and mixed precision ---------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        # two backward passes per batch, each leaving the other player's parameters unused: DDP must look for
        # unused parameters (set before the strategy wraps the model, which happens after this hook)
        if isinstance(strategy, DDPStrategy) and not ddp_kwargs(strategy).get("find_unused_parameters"):
            if ddp_kwargs(strategy).get("static_graph"):
                raise LitGenError(
                    "trainer.strategy: the GAN cannot use DDP's static_graph (its graph changes)"
                )
            ddp_kwargs(strategy)["find_unused_parameters"] = True
            rank_zero_info("GAN: DDP find_unused_parameters=True (one backward pass per player)")
        self.check_shapes(getattr(self.trainer, "datamodule", None))

    def check_shapes(self, datamodule) -> None:
        """A one-line error, before any training, when the generator's samples do not have the data's shape
        (``image_shape``, or the mixture's point dimension) or the discriminator cannot read them."""
        expected = getattr(datamodule, "image_shape", None)
        if expected is None and getattr(datamodule, "modes", None) is not None:
            expected = (int(datamodule.modes.shape[1]),)
        if expected is None:
            return
        with eval_mode(self.generator, self.discriminator):  # no BatchNorm statistics are updated
            fake = self.generator(torch.zeros(self.pack, self.latent_dim, device=self.device))
            if tuple(fake.shape[1:]) != tuple(expected):
                raise LitGenError(
                    f"model.generator: makes samples of shape {tuple(fake.shape[1:])} but the data's have shape "
                    f"{tuple(expected)} (check image_size / channels / data_dim in model and data)"
                )
            try:
                self.discriminate(fake)
            except RuntimeError as err:
                reason = str(err).strip().splitlines()[0][:200]
                raise LitGenError(
                    f"model.discriminator: cannot read samples of shape {tuple(expected)} packed by "
                    f"{self.pack} (check its image_size / channels / data_dim): {reason}"
                ) from None

    def on_before_optimizer_step(self, optimizer) -> None:
        # runs after the precision plugin unscaled the gradients (16-mixed), before the step
        if self.gradient_clip_val is not None:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.gradient_clip_val,
                gradient_clip_algorithm=self.gradient_clip_algorithm,
            )

    def backward_outside_autocast(self, loss: Tensor) -> None:
        """``manual_backward`` with autocast off (Lightning runs ``training_step`` under autocast): the
        gradient penalty's double-backward ops would otherwise run, and overflow, in float16. Ops that ran in
        half precision in the forward pass still get their backward in that precision."""
        with torch.autocast(self.device.type, enabled=False):
            self.manual_backward(loss)

    # --- optimizers ------------------------------------------------------------------------------------------

    def configure_optimizers(self):
        opt_g = make_optimizer(
            self.generator_optimizer, self.generator.parameters(), "model.generator_optimizer"
        )
        opt_d = make_optimizer(
            self.discriminator_optimizer, self.discriminator.parameters(), "model.discriminator_optimizer"
        )
        schedulers = []
        if self.generator_lr_scheduler is not None:
            schedulers.append({"scheduler": self.generator_lr_scheduler(opt_g), "name": "generator"})
        if self.discriminator_lr_scheduler is not None:
            schedulers.append({"scheduler": self.discriminator_lr_scheduler(opt_d), "name": "discriminator"})
        return [opt_g, opt_d], schedulers

    def scheduler_of(self, player: Literal["generator", "discriminator"]):
        """The LR scheduler of ``player``, when its ``*_lr_scheduler`` is configured (``configure_optimizers``
        lists the generator's first)."""
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        return schedulers[0 if player == "generator" else -1]

    # --- noise and data space --------------------------------------------------------------------------------

    def latents(self, num_samples: int) -> Tensor:
        """This training batch's latents: this rank's rows of the global batch's (see the module docstring)."""
        return self.batch_noise(NoiseStream.LATENTS, (num_samples, self.latent_dim))

    def batches_for_optimizer_steps(self, steps: int) -> int:
        # after k more batches from batch s: k D steps + G steps on the batches j in [s, s + k) with
        # (j + 1) % n_critic == 0, i.e. floor((s + k) / n) - floor(s / n) of them; the least k reaching ``steps``
        seen, n = int(self.batches_seen), self.n_critic
        low, high = 0, max(steps, 0)
        while low < high:
            k = (low + high) // 2
            if k + (seen + k) // n - seen // n >= steps:
                high = k
            else:
                low = k + 1
        return low

    def packed(self, x: Tensor) -> Tensor:
        """D's inputs: ``pack`` consecutive samples concatenated along the channel/feature axis."""
        return x.reshape(x.shape[0] // self.pack, -1, *x.shape[2:]) if self.pack > 1 else x

    def discriminate(self, x: Tensor) -> Tensor:
        """D's logits for a batch in model space, packing ``pack`` consecutive samples into one D input."""
        return self.discriminator(self.packed(x))

    def discriminator_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """The penalty on what D reads: gradients with respect to each packed input (not to its members, which
        would divide R1 by ``pack`` and make WGAN-GP constrain the members' gradient norms), and one
        interpolation weight per packed input."""
        real, fake = self.packed(real), self.packed(fake.detach())
        mix = self.batch_noise(NoiseStream.PENALTY_MIX, (real.shape[0],), torch.rand)
        return self.penalty(self.discriminator, real, fake, mix)

    @staticmethod
    def to_model_space(x: Tensor) -> Tensor:
        return x * 2.0 - 1.0 if x.dim() == 4 else x

    @staticmethod
    def to_data_space(x: Tensor) -> Tensor:
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0) if x.dim() == 4 else x

    # --- training --------------------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        real = self.to_model_space(self.batch_data(batch))
        real = real[: real.shape[0] - real.shape[0] % self.pack]
        trains_generator = int(self.batches_seen) % self.n_critic == self.n_critic - 1
        # one forward of G serves both players: detached for D, attached for G on generator-step batches
        with torch.set_grad_enabled(trains_generator):
            fake = self.generator(self.latents(real.shape[0]))
        losses, real_logits, fake_logits = self.discriminator_step(real, fake)
        if trains_generator:
            losses["train/g_loss"] = self._last_g_loss = self.generator_step(fake)
        self.batches_seen += 1
        if self.logs_this_batch(batch_idx):
            self.log_train_metrics(losses, real_logits, fake_logits)
        # the loss terms of this batch, for callbacks (``outputs``): NonFiniteGuard checks them every batch
        return losses

    def discriminator_step(self, real: Tensor, fake: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """One optimizer step of D on a real batch and G's samples ``fake`` (detached here), both in model space.
        Returns the loss terms (detached) and D's logits on the real and on the fake batch."""
        opt_d = self.optimizers()[1]
        self.toggle_optimizer(opt_d)
        real_logits = self.discriminate(real)
        fake_logits = self.discriminate(fake.detach())
        d_loss = self.loss.discriminator(real_logits, fake_logits)
        losses = {"train/d_loss": d_loss.detach()}
        if self.penalty is not None:
            penalty = self.discriminator_penalty(real, fake)
            losses[f"train/{self.penalty.name}"] = penalty.detach()
            d_loss = d_loss + penalty
        opt_d.zero_grad(set_to_none=True)
        self.backward_outside_autocast(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        if self.discriminator_lr_scheduler is not None:
            self.scheduler_of("discriminator").step()
        return losses, real_logits, fake_logits

    def generator_step(self, fake: Tensor) -> Tensor:
        """One optimizer step of G (then of its EMA) on the loss of its samples ``fake``, made from this
        batch's latents with gradients on. Returns the loss, detached."""
        opt_g = self.optimizers()[0]
        self.toggle_optimizer(opt_g)
        g_loss = self.loss.generator(self.discriminate(fake))
        opt_g.zero_grad(set_to_none=True)
        self.backward_outside_autocast(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.generator_lr_scheduler is not None:
            self.scheduler_of("generator").step()
        if self.generator_ema is not None:
            self.update_ema()
        return g_loss.detach()

    def log_train_metrics(self, losses: dict[str, Tensor], real_logits: Tensor, fake_logits: Tensor) -> None:
        """Logs the batch's loss terms, D's mean scores on real and fake samples, and both learning rates."""
        logs = dict(losses)
        logs["train/D_real"] = self.loss.score(real_logits.detach()).mean()
        logs["train/D_fake"] = self.loss.score(fake_logits.detach()).mean()
        if self._last_g_loss is not None:  # as Lightning keeps it: the latest generator step's
            logs["train/g_loss"] = self._last_g_loss
        logs = self.mean_over_ranks(logs)
        opt_g, opt_d = self.optimizers()
        logs["train/lr_g"] = opt_g.param_groups[0]["lr"]
        logs["train/lr_d"] = opt_d.param_groups[0]["lr"]
        self.log_dict(logs, prog_bar=False)
        self.log("d_loss", logs["train/d_loss"], prog_bar=True, logger=False)
        if "train/g_loss" in logs:
            self.log("g_loss", logs["train/g_loss"], prog_bar=True, logger=False)

    def ema_decay_at(self, updates: int) -> float:
        """The EMA decay of update number ``updates + 1`` (``updates`` generator steps averaged before it)."""
        return self.generator_ema.decay_at(updates)

    def update_ema(self) -> None:
        """One EMA step of the generator (``lit_gen.ema.EMA.update``)."""
        self.generator_ema.update(self.generator)

    def ema_statistics(self) -> None:
        """Recomputes the EMA generator's BatchNorm running statistics for its current weights, when they
        changed: ``EMA_STATISTICS_BATCHES`` training-mode passes of ``EMA_STATISTICS_BATCH_SIZE`` latents drawn
        from ``noise_seed``."""
        if self.generator_ema is not None:
            self.generator_ema.recompute_statistics(
                lambda rng: torch.randn(EMA_STATISTICS_BATCH_SIZE, self.latent_dim, generator=rng).to(
                    self.device
                ),
                seed=self.noise_seed,
                passes=EMA_STATISTICS_BATCHES,
            )

    # --- sampling --------------------------------------------------------------------------------------------

    @property
    def sampling_generator(self) -> nn.Module:
        """The network used for samples and evaluation: the EMA generator when there is one (``generate`` and
        ``forward`` first bring its BatchNorm statistics up to date)."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def generate(self, num_samples: int, rng: torch.Generator | None = None, ema: bool = True) -> Tensor:
        net = self.sampling_generator if ema else self.generator
        if net is not self.generator:
            self.ema_statistics()
        z = torch.randn(num_samples, self.latent_dim, generator=rng).to(self.device)
        with eval_mode(net):
            return self.to_data_space(net(z)).float()

    def forward(self, z: Tensor) -> Tensor:
        self.ema_statistics()
        return self.sampling_generator(z)

    # --- checkpoint ------------------------------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.generator_ema is not None:
            self.generator_ema.statistics_stale = True
