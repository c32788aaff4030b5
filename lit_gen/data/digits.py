"""The embedded dataset: scikit-learn's 1,797 8x8 handwritten digits, upsampled. Needs no download."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from lit_gen.data.base import DataModule


def load_digits_tensor(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, image_size, image_size) floats in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bicubic", align_corners=False)
    return images.clamp(0.0, 1.0), torch.tensor(digits.target)


class Digits(DataModule):
    """scikit-learn's bundled 8x8 digits (UCI optdigits test set, 1,797 images), bicubically upsampled.

    Args:
        image_size: output resolution (e.g. 32 for the DCGAN quickstart).
        val_fraction: share held out for validation/evaluation (seeded split).
    """

    def __init__(
        self,
        image_size: int = 32,
        val_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.image_size, self.val_fraction = image_size, val_fraction
        self.image_shape = (1, image_size, image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            images, labels = load_digits_tensor(self.image_size)
            self.train_set, self.val_set = self.split(TensorDataset(images, labels), self.val_fraction)
