"""ResNet generator and discriminator in the SNGAN CIFAR-10 style (Miyato et al. 2018, appendix B.4).

Initialisation as in SN-GAN's Chainer code and mimicry (Lee & Town 2020): Xavier-uniform weights, gain sqrt(2)
in the residual branches' convolutions, 1 in the shortcuts and the first and last layers.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from lit_gen.nets.common import maybe_spectral_norm, xavier

_RESIDUAL_GAIN = math.sqrt(2.0)


class _GeneratorBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3 with a learned 1x1 upsampled shortcut."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(features), nn.BatchNorm2d(features)
        self.conv1 = xavier(nn.Conv2d(features, features, 3, 1, 1), _RESIDUAL_GAIN)
        self.conv2 = xavier(nn.Conv2d(features, features, 3, 1, 1), _RESIDUAL_GAIN)
        self.shortcut = xavier(nn.Conv2d(features, features, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class ResNetGenerator(nn.Module):
    """z (128) -> 4x4x256 -> three up-blocks -> BN, ReLU, conv3 -> tanh; 32 px for CIFAR-10."""

    def __init__(self, latent_dim: int = 128, channels: int = 3, width: int = 256, bottom: int = 4) -> None:
        super().__init__()
        self.latent_dim, self.width, self.bottom = latent_dim, width, bottom
        self.linear = xavier(nn.Linear(latent_dim, bottom * bottom * width))
        self.blocks = nn.Sequential(*[_GeneratorBlock(width) for _ in range(3)])
        self.out = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), xavier(nn.Conv2d(width, channels, 3, 1, 1)), nn.Tanh()
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z.reshape(z.shape[0], -1)).reshape(-1, self.width, self.bottom, self.bottom)
        return self.out(self.blocks(h))


class _DiscriminatorBlock(nn.Module):
    """ReLU-conv3-ReLU-conv3(-avgpool) with a 1x1 shortcut; the first block skips the leading ReLU."""

    def __init__(self, in_features: int, features: int, downsample: bool, first: bool, sn: bool) -> None:
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1 = maybe_spectral_norm(
            xavier(nn.Conv2d(in_features, features, 3, 1, 1), _RESIDUAL_GAIN), sn
        )
        self.conv2 = maybe_spectral_norm(xavier(nn.Conv2d(features, features, 3, 1, 1), _RESIDUAL_GAIN), sn)
        self.learned_shortcut = downsample or in_features != features
        if self.learned_shortcut:
            self.shortcut = maybe_spectral_norm(xavier(nn.Conv2d(in_features, features, 1)), sn)

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        skip = x
        if self.learned_shortcut:
            if self.first:  # SNGAN's optimized first block: pool, then 1x1 conv
                skip = self.shortcut(F.avg_pool2d(x, 2) if self.downsample else x)
            else:
                skip = self.shortcut(x)
                skip = F.avg_pool2d(skip, 2) if self.downsample else skip
        return h + skip


class ResNetDiscriminator(nn.Module):
    """image -> logit: four residual blocks (two downsampling), ReLU, global sum pooling, linear; SN by default."""

    def __init__(self, channels: int = 3, width: int = 128, spectral_norm: bool = True) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            _DiscriminatorBlock(channels, width, downsample=True, first=True, sn=spectral_norm),
            _DiscriminatorBlock(width, width, downsample=True, first=False, sn=spectral_norm),
            _DiscriminatorBlock(width, width, downsample=False, first=False, sn=spectral_norm),
            _DiscriminatorBlock(width, width, downsample=False, first=False, sn=spectral_norm),
        )
        self.linear = maybe_spectral_norm(xavier(nn.Linear(width, 1)), spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.linear(h).reshape(x.shape[0])
