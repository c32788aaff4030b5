"""2-D Gaussian mixtures with the PacGAN / VEEGAN protocol (ring of 8, grid of 25)."""

from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

from lit_gen.data.base import DataModule
from lit_gen.errors import LitGenError


class GaussianMixture(DataModule):
    """Equal-weight isotropic Gaussians at ``modes`` with standard deviation ``std``.

    The training set is a fixed, seeded draw of ``num_train`` points; batches yield (points, mode index).
    ``modes`` and ``std`` are read by the mode metrics and the scatter-plot callback.
    """

    def __init__(
        self,
        modes: list[list[float]],
        std: float,
        num_train: int = 100_000,
        num_val: int = 2_500,
        batch_size: int = 100,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if std <= 0:
            raise LitGenError(f"data.std must be positive, got {std}")
        if not modes:
            raise LitGenError("data.modes must list at least one mode")
        self.modes = torch.tensor(modes, dtype=torch.float32)
        self.std, self.num_train, self.num_val = std, num_train, num_val

    def sample(self, num: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(self.modes), (num,), generator=rng)
        points = self.modes[index] + self.std * torch.randn(num, self.modes.shape[1], generator=rng)
        return points, index

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            rng = torch.Generator().manual_seed(self.seed)
            self.train_set = TensorDataset(*self.sample(self.num_train, rng))
            self.val_set = TensorDataset(*self.sample(self.num_val, rng))


class Ring(GaussianMixture):
    """``num_modes`` Gaussians evenly spaced on a circle; PacGAN: 8 modes, radius 1, std 0.01."""

    def __init__(self, num_modes: int = 8, radius: float = 1.0, std: float = 0.01, **kwargs) -> None:
        angles = [2 * math.pi * k / num_modes for k in range(num_modes)]
        super().__init__([[radius * math.cos(a), radius * math.sin(a)] for a in angles], std, **kwargs)


class Grid(GaussianMixture):
    """Gaussians on a square grid; PacGAN: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05."""

    def __init__(self, side: int = 5, spacing: float = 2.0, std: float = 0.05, **kwargs) -> None:
        coords = [spacing * (i - (side - 1) / 2) for i in range(side)]
        super().__init__([[x, y] for x in coords for y in coords], std, **kwargs)
