"""Images as token sequences: pixels quantized to a small palette of grey levels, read in raster order.

An image ``(C, H, W)`` in [0, 1] becomes ``C * H * W`` tokens ``round(value * (levels - 1))`` (channel, then
row, then column). A begin-of-image token ``levels`` precedes them, so the model sees
``x = [BOS, p_0, ..., p_{n-2}]`` and predicts ``y = [p_0, ..., p_{n-1}]``: the context (``block_size``) is
``C * H * W`` and the vocabulary has ``levels + 1`` ids. Generated tokens decode back to images in [0, 1], so an
autoregressive model trained on pixels is evaluated like the other image families.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from lit_gen.data.text import Vocabulary
from lit_gen.errors import LitGenError
from lit_gen.utils import batch_data


def quantize(images: Tensor, levels: int) -> Tensor:
    """Images in [0, 1] ``(N, C, H, W)`` to long tokens ``(N, C*H*W)`` in ``0 .. levels - 1`` (raster order)."""
    return (images.float().clamp(0.0, 1.0) * (levels - 1)).round().long().flatten(1)


class PixelVocabulary(Vocabulary):
    """``levels`` grey levels plus a begin-of-image token (id ``levels``), for images of ``image_shape``.

    Args:
        levels: palette size (e.g. 16 grey levels).
        image_shape: (C, H, W) of the images.
    """

    def __init__(self, levels: int, image_shape: Sequence[int]) -> None:
        if levels < 2:
            raise LitGenError(f"data.levels must be at least 2, got {levels}")
        self.levels, self.image_shape = levels, tuple(int(s) for s in image_shape)
        self.size = levels + 1
        self.bos_id = levels

    @property
    def sequence_length(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    @property
    def start_id(self) -> int:
        return self.bos_id

    def encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Model inputs ``x`` (BOS + all pixels but the last) and targets ``y`` (all pixels)."""
        y = quantize(images, self.levels)
        x = torch.cat((torch.full_like(y[:, :1], self.bos_id), y[:, :-1]), dim=1)
        return x, y

    def decode_images(self, tokens: Tensor) -> Tensor:
        """Tokens ``(N, C*H*W)`` to float images ``(N, C, H, W)`` in [0, 1] (a stray BOS reads as white)."""
        values = tokens.clamp(0, self.levels - 1).float() / (self.levels - 1)
        return values.view(tokens.shape[0], *self.image_shape)

    def encode(self, text: str) -> list[int]:
        raise LitGenError("prompt: a pixel model takes no text prompt")

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    def init_args(self) -> dict[str, Any]:
        return {"levels": self.levels, "image_shape": list(self.image_shape)}


class PixelTokens(LightningDataModule):
    """Wraps an image DataModule (``lit_gen.data.Digits``, ``MNIST``, ...) and turns its batches into pixel
    tokens ``(x, y)`` for an autoregressive model. Batch size, split, shuffling and seeds are the wrapped
    module's; its ``train_set``/``val_set`` (images in [0, 1]) stay available for image metrics.

    Args:
        images: the image DataModule.
        levels: grey levels of the palette (16 for digits/MNIST); colour images keep one token per channel.
    """

    def __init__(self, images: LightningDataModule, levels: int = 16) -> None:
        super().__init__()
        if levels < 2:
            raise LitGenError(f"data.levels must be at least 2, got {levels}")
        self.images, self.levels = images, levels
        self.vocabulary: PixelVocabulary | None = None

    @property
    def vocab_size(self) -> int:
        return self.levels + 1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.vocabulary.image_shape

    @property
    def train_set(self):
        return self.images.train_set

    @property
    def val_set(self):
        return self.images.val_set

    def prepare_data(self) -> None:
        self.images.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.images.trainer = self.trainer
        self.images.setup(stage)
        shape = getattr(self.images, "image_shape", None)
        if shape is None:
            first = self.images.train_set[0]
            shape = tuple((first[0] if isinstance(first, (list, tuple)) else first).shape)
        self.vocabulary = PixelVocabulary(self.levels, shape)

    def train_dataloader(self):
        return self.images.train_dataloader()

    def val_dataloader(self):
        return self.images.val_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        return self.vocabulary.encode_images(batch_data(batch))
