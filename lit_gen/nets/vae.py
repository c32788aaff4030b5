"""Encoders and decoders of the VAE family.

An encoder maps images (N, C, H, W) to the mean and log-variance of a diagonal Gaussian q(z | x), each
(N, latent_dim). A decoder maps latents (N, latent_dim) to the parameters of p(x | z) as
(N, params_per_pixel * C, H, W); the likelihood (``lit_gen.likelihoods.Bernoulli``, ``Gaussian``,
``DiscretizedLogistic``) says how many parameters per pixel it needs and how to read them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_gen.errors import LitGenError


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Burda et al. (2015), one stochastic layer: flattened image -> 200 -> 200 (tanh) -> Gaussian over 50
    latents (two linear heads: mean and log-variance).

    Args:
        image_shape: (C, H, W) of the input images.
        hidden: widths of the deterministic tanh layers.
        latent_dim: size of z.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (200, 200),
        latent_dim: int = 50,
    ) -> None:
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        in_features = 1
        for size in self.image_shape:
            in_features *= size
        self.body = _mlp([in_features, *hidden], nn.Tanh)
        width = hidden[-1] if hidden else in_features
        self.mean = nn.Linear(width, latent_dim)
        self.log_var = nn.Linear(width, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x.flatten(1))
        return self.mean(h), self.log_var(h)


class MLPDecoder(nn.Module):
    """The mirror of ``MLPEncoder``: 50 latents -> 200 -> 200 (tanh) -> ``params_per_pixel`` values per pixel
    (Bernoulli logits, Gaussian mean [and log-variance], ...), reshaped to (N, params_per_pixel * C, H, W).
    """

    def __init__(
        self,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        image_shape: Sequence[int] = (1, 28, 28),
        params_per_pixel: int = 1,
    ) -> None:
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        self.params_per_pixel = params_per_pixel
        channels, height, width = self.image_shape
        self.out_shape = (params_per_pixel * channels, height, width)
        self.body = _mlp([latent_dim, *hidden], nn.Tanh)
        self.out = nn.Linear(
            hidden[-1] if hidden else latent_dim, params_per_pixel * channels * height * width
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.body(z)).reshape(z.shape[0], *self.out_shape)


def _check_divisible(net: str, image_size: int, stages: int) -> None:
    """The conv encoder/decoder halve (double) the resolution ``stages`` times."""
    if image_size % 2**stages:
        raise LitGenError(
            f"image_size: {net} needs a size divisible by 2^stages = {2**stages}, got {image_size}"
        )


class ConvEncoder(nn.Module):
    """32 px RGB images (any size divisible by 2^stages) -> Gaussian q(z | x): ``stages`` stride-2 4x4 convs
    (widths ``width * 2^i``, LeakyReLU(0.2), no normalisation), flattened into linear mean/log-variance heads.
    """

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        width: int = 64,
        stages: int = 3,
        latent_dim: int = 128,
    ) -> None:
        super().__init__()
        _check_divisible(type(self).__name__, image_size, stages)
        self.latent_dim = latent_dim
        layers: list[nn.Module] = []
        features = channels
        for i in range(stages):
            layers += [nn.Conv2d(features, width * 2**i, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            features = width * 2**i
        self.body = nn.Sequential(*layers, nn.Flatten())
        flat = features * (image_size // 2**stages) ** 2
        self.mean = nn.Linear(flat, latent_dim)
        self.log_var = nn.Linear(flat, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mean(h), self.log_var(h)


class ConvDecoder(nn.Module):
    """The mirror of ``ConvEncoder``: a linear projection to (width * 2^(stages-1), size / 2^stages, ...),
    stride-2 4x4 transposed convs with LeakyReLU(0.2), and a 3x3 conv to ``params_per_pixel * channels``."""

    def __init__(
        self,
        latent_dim: int = 128,
        channels: int = 3,
        image_size: int = 32,
        width: int = 64,
        stages: int = 3,
        params_per_pixel: int = 1,
    ) -> None:
        super().__init__()
        _check_divisible(type(self).__name__, image_size, stages)
        self.latent_dim, self.params_per_pixel = latent_dim, params_per_pixel
        features, start = width * 2 ** (stages - 1), image_size // 2**stages
        self.start_shape = (features, start, start)
        self.project = nn.Linear(latent_dim, features * start * start)
        layers: list[nn.Module] = []
        for i in reversed(range(stages)):
            out = width * 2 ** max(i - 1, 0)
            layers += [
                nn.LeakyReLU(0.2, inplace=True),
                nn.ConvTranspose2d(features, out, 4, 2, 1),
            ]
            features = out
        layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(features, params_per_pixel * channels, 3, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.project(z).reshape(z.shape[0], *self.start_shape))
