"""VQ-VAE (van den Oord et al. 2017): an encoder, a vector quantizer with straight-through gradients and a
decoder, trained with reconstruction + codebook + commitment losses (or EMA codebook updates instead of the
codebook loss), with dead-code restarts.

Images cross the module boundary in [0, 1] and are centred to [-0.5, 0.5] inside. The discrete codes are
exposed for a prior over them (e.g. the transformer family): ``encode_indices(images) -> (N, h, w)`` long
tensor in [0, num_embeddings) and ``decode_indices(indices) -> images``; ``num_embeddings`` is the
vocabulary size and ``latent_shape`` the (h, w) code grid. ``generate`` decodes codes drawn from the uniform
prior the VQ-VAE is trained with, which is why the paper fits an autoregressive prior afterwards.
"""

from __future__ import annotations

from enum import IntEnum

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_gen._lightning import attached_trainer
from lit_gen.errors import LitGenError
from lit_gen.losses import vq_codebook_loss, vq_commitment_loss
from lit_gen.models.base import GenerativeModule
from lit_gen.nets.vqvae import VectorQuantizer, codebook_perplexity
from lit_gen.utils import eval_mode


def _adam_vqvae(params) -> torch.optim.Optimizer:
    """Adam(lr=2e-4), the paper's setting."""
    return torch.optim.Adam(params, lr=2e-4)


class NoiseStream(IntEnum):
    """The VQ-VAE's training noise: which encoder outputs restart dead codes."""

    CODE_RESTARTS = 0


class VQVAE(GenerativeModule):
    """VQ-VAE with a convolutional encoder/decoder and a ``VectorQuantizer``.

    Loss: ||x - x_hat||^2 / data_variance + ||sg[z_e] - e||^2 (gradient codebook only) +
    commitment_cost * ||z_e - sg[e]||^2, with means over elements.

    Args:
        encoder: images (N, C, H, W) -> z_e (N, D, h, w); attributes ``channels`` and ``downsampling``.
        decoder: (N, D, h, w) -> images (N, C, H, W) centred at 0.
        quantizer: the codebook (``lit_gen.nets.VectorQuantizer``: EMA or gradient updates, dead-code restarts).
        commitment_cost: β of the commitment loss (0.25 in the paper).
        data_variance: the squared reconstruction error is divided by this (the pixel variance of the training
            set, in [0, 1] units, makes the loss scale-free; 1.0 leaves it as plain MSE).
        image_size: training image size; with ``encoder.downsampling`` it fixes the code grid for ``generate``.
        optimizer: injected from the config; default Adam(2e-4) as the paper.
        lr_scheduler: optional, stepped per epoch.
        noise_seed: base seed of dead-code restarts and prior samples; None takes ``seed_everything``'s seed.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        quantizer: VectorQuantizer,
        commitment_cost: float = 0.25,
        data_variance: float = 1.0,
        image_size: int = 32,
        optimizer: OptimizerCallable = _adam_vqvae,
        lr_scheduler: LRSchedulerCallable | None = None,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(noise_seed)
        if commitment_cost < 0:
            raise LitGenError(f"model.commitment_cost must be >= 0, got {commitment_cost}")
        if data_variance <= 0:
            raise LitGenError(f"model.data_variance must be positive, got {data_variance}")
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            dim = getattr(net, "embedding_dim", quantizer.embedding_dim)
            if dim != quantizer.embedding_dim:
                raise LitGenError(
                    f"model.{name}.embedding_dim ({dim}) must equal model.quantizer.embedding_dim "
                    f"({quantizer.embedding_dim})"
                )
        downsampling = int(getattr(encoder, "downsampling", 1))
        if image_size % downsampling:
            raise LitGenError(
                f"model.image_size ({image_size}) must be divisible by the encoder's downsampling ({downsampling})"
            )
        self.save_hyperparameters_without_modules()
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.commitment_cost, self.data_variance = commitment_cost, data_variance
        self.channels = int(getattr(encoder, "channels", 3))
        self.latent_shape = (image_size // downsampling, image_size // downsampling)
        self.num_embeddings = quantizer.num_embeddings
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler

    def configure_optimizers(self):
        return self.optimizer_config(self.optimizer, self.parameters(), self.lr_scheduler)

    # --- codes -----------------------------------------------------------------------------------------------

    def encode_indices(self, images: Tensor) -> Tensor:
        """Code indices (N, h, w), long, of images in [0, 1]."""
        with eval_mode(self):
            _, indices, _ = self.quantizer(self.encoder(images.to(self.device) - 0.5))
        return indices

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images in [0, 1] (N, C, H, W) from code indices (N, h, w)."""
        with eval_mode(self):
            return (
                (self.decoder(self.quantizer.lookup(indices.to(self.device))) + 0.5).clamp(0.0, 1.0).float()
            )

    def reconstruct(self, images: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """decode(quantize(encode(x))) for images in [0, 1]."""
        return self.decode_indices(self.encode_indices(images))

    def generate(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        """Decoded codes from the uniform prior (the VQ-VAE's own; train a prior on ``encode_indices`` for
        realistic samples)."""
        indices = torch.randint(self.num_embeddings, (num_samples, *self.latent_shape), generator=rng)
        return self.decode_indices(indices)

    # --- training --------------------------------------------------------------------------------------------

    def _reduce(self, tensor: Tensor) -> Tensor:
        """Sum over DDP processes (identity on one device)."""
        trainer = attached_trainer(self)
        return trainer.strategy.reduce(tensor, reduce_op="sum") if trainer is not None else tensor

    def _broadcast(self, tensor: Tensor) -> Tensor:
        """Rank 0's tensor on every DDP process."""
        trainer = attached_trainer(self)
        return trainer.strategy.broadcast(tensor, src=0) if trainer is not None else tensor

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        """Forward pass on centred images: the loss terms, the encoder outputs and the chosen indices."""
        z_e = self.encoder(x)
        z_st, indices, z_q = self.quantizer(z_e)
        x_hat = self.decoder(z_st)
        out = {
            "recon": F.mse_loss(x_hat, x) / self.data_variance,
            "commitment": vq_commitment_loss(z_e, z_q),
            "z_e": z_e,
            "indices": indices,
        }
        out["loss"] = out["recon"] + self.commitment_cost * out["commitment"]
        if not self.quantizer.ema:
            out["codebook"] = vq_codebook_loss(z_e, z_q)
            out["loss"] = out["loss"] + out["codebook"]
        return out

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        x = self.batch_data(batch) - 0.5
        out = self.losses(x)
        logs = {
            f"train/{key}": out[key].detach()
            for key in ("loss", "recon", "commitment", "codebook")
            if key in out
        }
        losses = dict(logs)
        logs.update(self.update_codebook(out["z_e"].detach(), out["indices"]))
        self.batches_seen += 1
        if self.logs_this_batch(batch_idx):  # only where a logger writes (a log call costs ~0.3 ms)
            # the global batch's means under DDP (the codebook statistics already are)
            logs.update(self.mean_over_ranks(losses))
            self.log_dict(logs, batch_size=x.shape[0])
            self.log("loss", logs["train/loss"], prog_bar=True, logger=False, batch_size=x.shape[0])
        # the loss terms for callbacks (``outputs``) too: NonFiniteGuard checks them on every batch
        return {"loss": out["loss"], **losses}

    @torch.no_grad()
    def update_codebook(self, z_e: Tensor, indices: Tensor) -> dict[str, Tensor]:
        """EMA codebook step (when enabled), usage statistics and dead-code restarts; returns the logs."""
        q = self.quantizer
        flat, flat_indices = q.flatten(z_e), indices.flatten()
        counts = self._reduce(q.counts(flat_indices))
        if q.ema:
            q.ema_update(counts, self._reduce(q.code_sums(flat, flat_indices)))
        q.track_usage(counts)
        dead = q.dead_codes()
        if dead.numel():  # rank 0's picks among its encoder outputs restart the codes on every rank
            rng = self.noise_rng(NoiseStream.CODE_RESTARTS)
            picks = torch.randint(flat.shape[0], (dead.numel(),), generator=rng).to(flat.device)
            q.restart_codes(dead, self._broadcast(flat[picks]))
        return {
            "train/perplexity": codebook_perplexity(counts),
            "train/codebook_usage": (counts > 0).float().mean(),
            "train/dead_codes_restarted": torch.tensor(float(dead.numel())),
        }

    def _evaluate(self, batch, prefix: str) -> None:
        x = self.batch_data(batch) - 0.5
        out = self.losses(x)
        counts = self.quantizer.counts(out["indices"])
        logs = {f"{prefix}/{key}": out[key] for key in ("loss", "recon", "commitment")}
        logs[f"{prefix}/mse"] = out["recon"] * self.data_variance
        logs[f"{prefix}/perplexity"] = codebook_perplexity(counts)
        self.log_dict(logs, batch_size=x.shape[0], sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def forward(self, images: Tensor) -> Tensor:
        return self.reconstruct(images)
