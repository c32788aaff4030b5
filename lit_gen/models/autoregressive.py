"""The autoregressive family: a decoder-only transformer trained on next-token prediction (GPT, nanoGPT).

The data decides what tokens mean: characters or bytes of a text (``lit_gen.data.Text``) or quantized pixels
of images (``lit_gen.data.PixelTokens``). The data's ``Vocabulary`` is stored in every checkpoint, so
``sample`` decodes text and images without the data. ``generate`` returns images in [0, 1] ``(N, C, H, W)`` for
a pixel vocabulary (like the other image families) and token ids ``(N, T)`` for text.

Why the network's ``vocab_size`` is set in the config rather than linked from the data: ``load_model``
rebuilds the network from the stored config alone, and a CLI link (``data.vocab_size`` -> model) would break
every family whose data has no vocabulary. So the config states it (65 for Tiny Shakespeare by characters) and
``setup`` checks it against the data, failing with one line that names ``model.network.init_args.vocab_size``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_gen._lightning import attached_trainer
from lit_gen.data.text import Vocabulary
from lit_gen.errors import LitGenError
from lit_gen.models.base import GenerativeModule
from lit_gen.optim import parameter_groups
from lit_gen.utils import eval_mode


def _adamw_gpt(params) -> torch.optim.Optimizer:
    """AdamW(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1): GPT-3's and nanoGPT's defaults."""
    return torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)


class Autoregressive(GenerativeModule):
    """Next-token prediction with a causal transformer, AdamW with decay/no-decay groups and a per-step LR
    schedule. Gradient clipping is the trainer's (``trainer.gradient_clip_val``).

    Logged: ``train/loss``, ``train/bits_per_token``, ``train/perplexity``, ``train/tokens_per_sec``,
    ``train/lr``; ``val/loss``, ``val/bits_per_token``, ``val/perplexity`` (token-weighted over the
    validation batches).

    Args:
        network: a ``lit_gen.nets.GPT`` (anything mapping ids ``(B, T)`` to logits ``(B, T, V)`` with
            ``vocab_size``/``block_size`` attributes and a ``generate`` method).
        optimizer: called with named parameter groups (``lit_gen.optim.parameter_groups``): ``matrices`` (hidden
            layers' weights) and ``embeddings``, decayed with the optimizer's ``weight_decay``, and ``vectors``
            (biases, norm gains; ``weight_decay: 0``). AdamW treats the first two alike, as nanoGPT does;
            ``lit_gen.optim.MuonWithAdamW`` gives the matrices to Muon.
        lr_scheduler: optional, stepped after every optimizer step (e.g. ``lit_gen.optim.WarmupCosineLR``).
        temperature / top_k: sampling settings of ``generate`` (and of ``SampleGrid`` grids).
        sample_length: tokens per text sample from ``generate`` (default: the network's ``block_size``).
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerCallable = _adamw_gpt,
        lr_scheduler: LRSchedulerCallable | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        sample_length: int | None = None,
    ) -> None:
        super().__init__()
        for attribute in ("vocab_size", "block_size", "generate"):
            if not hasattr(network, attribute):
                raise LitGenError(f"model.network {type(network).__name__} has no `{attribute}` attribute")
        if temperature < 0:
            raise LitGenError(f"model.temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise LitGenError(f"model.top_k must be a positive integer or null, got {top_k}")
        self.save_hyperparameters_without_modules()
        self.network = network
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.temperature, self.top_k = temperature, top_k
        self.sample_length = sample_length or network.block_size
        self.vocabulary: Vocabulary | None = None
        self.val_loss = MeanMetric()
        self._last_batch_end: float | None = None
        self._log_throughput = False

    # --- data ------------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        trainer = attached_trainer(self)
        datamodule = trainer.datamodule if trainer is not None else None
        vocabulary = getattr(datamodule, "vocabulary", None)
        if vocabulary is None:
            if self.vocabulary is not None:  # e.g. fine-tuning from a checkpoint with other data
                return
            raise LitGenError(
                f"data: {type(datamodule).__name__} yields no tokens; the autoregressive model needs "
                "lit_gen.data.Text or lit_gen.data.PixelTokens"
            )
        if vocabulary.size != self.network.vocab_size:
            raise LitGenError(
                f"model.network.init_args.vocab_size is {self.network.vocab_size} but the data's vocabulary has "
                f"{vocabulary.size} symbols; set model.network.init_args.vocab_size: {vocabulary.size}"
            )
        length = getattr(vocabulary, "sequence_length", None) or getattr(datamodule, "block_size", None)
        if length is not None and length > self.network.block_size:
            raise LitGenError(
                f"model.network.init_args.block_size is {self.network.block_size} but the data's sequences "
                f"have {length} tokens; set model.network.init_args.block_size: {length} (or more)"
            )
        self.vocabulary = vocabulary

    @property
    def is_pixel_model(self) -> bool:
        return hasattr(self.vocabulary, "decode_images")

    @property
    def is_text_model(self) -> bool:
        return self.vocabulary is not None and not self.is_pixel_model

    # --- optimization ----------------------------------------------------------------------------------------

    def configure_optimizers(self):
        return self.optimizer_config(
            self.optimizer, parameter_groups(self.network), self.lr_scheduler, interval="step"
        )

    # --- training --------------------------------------------------------------------------------------------

    def forward(self, idx: Tensor) -> Tensor:
        return self.network(idx)

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean cross-entropy (nats per token) of the next-token predictions."""
        x, y = batch
        logits = self.network(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss = self.loss(batch)
        self.batches_seen += 1
        if self.logs_this_batch(batch_idx):  # only where a logger writes (a log call costs ~0.3 ms)
            value = self.mean_over_ranks({"loss": loss.detach()})["loss"]  # the global batch's under DDP
            self.log("train/loss", value, prog_bar=True)
            self.log("train/bits_per_token", value / math.log(2))
            self.log("train/perplexity", value.exp())
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            self._log_throughput = True
        # the loss term for callbacks (``outputs``) too: NonFiniteGuard checks it on every batch
        return {"loss": loss, "train/loss": loss.detach()}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._log_throughput and self._last_batch_end is not None:  # this batch's: from the previous end
            self.log("train/tokens_per_sec", batch[1].numel() / (now - self._last_batch_end))
        self._last_batch_end, self._log_throughput = now, False

    def on_validation_start(self) -> None:
        self._last_batch_end = None  # the time spent validating is not training throughput

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.val_loss.update(self.loss(batch), weight=batch[1].numel())

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/bits_per_token", loss / math.log(2))
        self.log("val/perplexity", loss.exp())

    # --- sampling --------------------------------------------------------------------------------------------

    def stream(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        temperature: float | None = None,
        top_k: int | None = None,
        rng: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Yields ``max_new_tokens`` next tokens ``(B, 1)`` continuing ``prompt (B, T)`` (eval mode, no grad)."""
        temperature = self.temperature if temperature is None else temperature
        top_k = self.top_k if top_k is None else top_k
        with eval_mode(self.network):
            yield from self.network.generate(
                prompt.to(self.device), max_new_tokens, temperature, top_k, rng=rng
            )

    def generate(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        """Pixel models: images ``(N, C, H, W)`` in [0, 1]. Text models: ``sample_length`` token ids
        ``(N, sample_length)`` after the start token (decode with ``self.vocabulary.decode``)."""
        if self.vocabulary is None:
            raise LitGenError("model: no vocabulary yet (train it or load it from a checkpoint)")
        start = torch.full((num_samples, 1), self.vocabulary.start_id, dtype=torch.long)
        length = self.vocabulary.sequence_length if self.is_pixel_model else self.sample_length
        tokens = torch.cat(list(self.stream(start, length, rng=rng)), dim=1).cpu()
        return self.vocabulary.decode_images(tokens) if self.is_pixel_model else tokens

    def configure_sampling(self, temperature: float | None = None, top_k: int | None = None) -> None:
        """Overrides the sampling temperature and top-k (None keeps the current value)."""
        if temperature is not None:
            if temperature < 0:
                raise LitGenError(f"temperature must be >= 0, got {temperature}")
            self.temperature = temperature
        if top_k is not None:
            if top_k < 1:
                raise LitGenError(f"top_k must be a positive integer, got {top_k}")
            self.top_k = top_k

    def stream_text(
        self, prompt: str, max_new_tokens: int, rng: torch.Generator | None = None
    ) -> Iterator[str]:
        """Yields ``prompt``, then ``max_new_tokens`` sampled tokens decoded piece by piece as they are generated
        (bytes are decoded incrementally, so a piece may be empty until a character is complete). An empty prompt
        starts from the vocabulary's start token (a newline)."""
        if max_new_tokens < 1:
            raise LitGenError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
        ids = self.vocabulary.encode(prompt) if prompt else [self.vocabulary.start_id]
        decoder = self.vocabulary.decoder()
        yield prompt
        for token in self.stream(torch.tensor([ids], dtype=torch.long), max_new_tokens, rng=rng):
            token_id = int(token[0, 0])
            yield decoder.decode(bytes([token_id])) if decoder else self.vocabulary.decode([token_id])
        if decoder is not None:
            yield decoder.decode(b"", final=True)

    # --- checkpoint ------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.vocabulary is not None:
            checkpoint["vocabulary"] = self.vocabulary.to_config()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "vocabulary" in checkpoint:
            self.vocabulary = Vocabulary.from_config(checkpoint["vocabulary"])
