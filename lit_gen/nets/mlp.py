"""MLP generator and discriminator for 2-D toy data (the PacGAN / VEEGAN mixture experiments)."""

from __future__ import annotations

from torch import Tensor, nn

from lit_gen.nets.common import maybe_spectral_norm


def _mlp(in_dim: int, hidden: list[int], out_dim: int, activation: type[nn.Module], spectral_norm: bool):
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [maybe_spectral_norm(nn.Linear(in_dim, width), spectral_norm), activation()]
        in_dim = width
    layers.append(maybe_spectral_norm(nn.Linear(in_dim, out_dim), spectral_norm))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z -> points. PacGAN's toy generator: 4 hidden layers of 400 ReLU units, 2-D latent."""

    def __init__(self, latent_dim: int = 2, hidden: list[int] | None = None, data_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp(latent_dim, hidden or [400, 400, 400, 400], data_dim, nn.ReLU, spectral_norm=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """points -> logit. ``data_dim`` is the input width: 2 x pack when the GAN packs samples (PacGAN)."""

    def __init__(
        self, data_dim: int = 2, hidden: list[int] | None = None, spectral_norm: bool = False
    ) -> None:
        super().__init__()
        self.net = _mlp(data_dim, hidden or [200, 200, 200], 1, nn.LeakyReLU, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)
