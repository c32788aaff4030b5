"""DCGAN generator and discriminator (Radford et al. 2016) for 28, 32 and 64 px images (any 7*2^k or 4*2^k)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_gen.errors import LitGenError
from lit_gen.nets.common import dcgan_init, maybe_spectral_norm


def _layout(image_size: int) -> tuple[int, int]:
    """(start resolution, number of 2x up/down-sampling stages) for ``image_size``."""
    for start in (4, 7):
        stages, size = 0, start
        while size < image_size:
            size, stages = size * 2, stages + 1
        if size == image_size and stages >= 1:
            return start, stages
    raise LitGenError(f"image_size: must be 4*2^k or 7*2^k (k >= 1), e.g. 28, 32 or 64; got {image_size}")


class DCGANGenerator(nn.Module):
    """z -> image in [-1, 1]: a projection to start x start, then stride-2 transposed convs with BN + ReLU."""

    def __init__(
        self, latent_dim: int = 100, channels: int = 3, image_size: int = 64, width: int = 64
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        start, stages = _layout(image_size)
        features = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, features, start, 1, 0, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(features, features // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(features // 2),
                nn.ReLU(True),
            ]
            features //= 2
        layers += [nn.ConvTranspose2d(features, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image -> logit: stride-2 convs with LeakyReLU(0.2).

    ``norm="batch"`` is the DCGAN paper's; use ``"layer"`` or ``"none"`` with WGAN-GP (the penalty is per sample),
    and ``spectral_norm=True`` for SN-GAN-style training. ``channels`` is image channels x pack for PacGAN.
    """

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 64,
        width: int = 64,
        norm: Literal["batch", "layer", "none"] = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        start, stages = _layout(image_size)
        layers: list[nn.Module] = [
            maybe_spectral_norm(nn.Conv2d(channels, width, 4, 2, 1), spectral_norm),
            nn.LeakyReLU(0.2, True),
        ]
        features, size = width, image_size // 2
        for _ in range(stages - 1):
            layers.append(
                maybe_spectral_norm(
                    nn.Conv2d(features, features * 2, 4, 2, 1, bias=norm == "none"), spectral_norm
                )
            )
            features, size = features * 2, size // 2
            if norm == "batch":
                layers.append(nn.BatchNorm2d(features))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, features))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(maybe_spectral_norm(nn.Conv2d(features, 1, start, 1, 0), spectral_norm))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0])
