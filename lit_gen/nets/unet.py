"""The DDPM U-Net (Ho et al. 2020, appendix B; their CIFAR-10 model: channels 128, multipliers (1, 2, 2, 2),
2 residual blocks per level, attention at 16x16, dropout 0.1: 35.7 M parameters), with DDPM++ options (Song et al.
2021: skip_rescale, Fourier time embedding) and a class embedding for classifier-free guidance.

forward(x, t, labels=None): x (B, C, H, W), t (B,) the time the path feeds (DDPM's step index, EDM's c_noise,
...), labels (B,) in 0..num_classes, where index num_classes is the null ("unconditional") class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer positional encoding of t (Vaswani et al. 2017), as DDPM: [sin(t f_i), cos(t f_i)],
    f_i = max_period^(-i / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [sin(2 pi t w), cos(2 pi t w)], w ~ N(0, scale^2) fixed (Tancik et al. 2020; the
    NCSN++ / DDPM++ continuous-time embedding, scale 16)."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, t: Tensor) -> Tensor:
        args = 2 * math.pi * t.float()[:, None] * self.freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=1)


class TimeEmbedding(nn.Module):
    """t -> embedding(t) (positional or Fourier, ``dim`` wide) -> Linear -> SiLU -> Linear (``out_dim``), plus a
    learned class embedding when ``num_classes`` is set (num_classes + 1 rows: the last is the null class)."""

    def __init__(self, dim: int, out_dim: int, embedding: str = "positional", num_classes: int | None = None):
        super().__init__()
        if embedding not in ("positional", "fourier"):
            raise ValueError(f"embedding: expected 'positional' or 'fourier', got {embedding!r}")
        self.dim, self.num_classes = dim, num_classes
        self.fourier = FourierEmbedding(dim) if embedding == "fourier" else None
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.classes = nn.Embedding(num_classes + 1, out_dim) if num_classes is not None else None

    def forward(self, t: Tensor, labels: Tensor | None = None) -> Tensor:
        t = t.expand(1) if t.dim() == 0 else t
        features = self.fourier(t) if self.fourier is not None else sinusoidal_embedding(t, self.dim)
        emb = self.mlp(features.to(self.mlp[0].weight.dtype))
        if self.classes is None and labels is not None:
            raise ValueError("labels given to a net without a class embedding (num_classes: null)")
        if self.classes is not None:
            if labels is None:  # unconditional: the null class
                labels = torch.full((len(emb),), self.num_classes, device=emb.device, dtype=torch.long)
            emb = emb + self.classes(labels)
        return emb


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (DDPM), or the most that divide narrower or odd widths (e.g. 16 of 48)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """GN, SiLU, conv3x3, + Linear(time embedding), GN, SiLU, dropout, conv3x3 (zero-initialised), plus a 1x1
    shortcut when the width changes."""

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, dropout: float, skip_rescale: bool, zero_init: bool
    ):
        super().__init__()
        self.block1 = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.block2 = nn.Sequential(
            _norm(c_out), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1)
        )
        if zero_init:
            nn.init.zeros_(self.block2[-1].weight)
            nn.init.zeros_(self.block2[-1].bias)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.block1(x) + self.emb(nn.functional.silu(emb))[:, :, None, None]
        return (self.shortcut(x) + self.block2(h)) * self.scale


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions: GN, q/k/v 1x1, softmax(q k^T / sqrt(d)) v, output 1x1 (zero-init)."""

    def __init__(self, channels: int, heads: int, skip_rescale: bool, zero_init: bool):
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        y = nn.functional.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return (x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))) * self.scale


class UNet(nn.Module):
    """DDPM / DDPM++ U-Net. ``attention_resolutions``: feature-map sizes (of ``image_size``) with self-attention;
    ``zero_init``: zero the last conv of each residual block, attention output and the output conv (DDPM).
    ``sample_shape`` and ``num_classes`` tell ``lit_gen.models.Diffusion`` what to sample."""

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        attention_heads: int = 1,
        dropout: float = 0.1,
        embedding: str = "positional",
        num_classes: int | None = None,
        skip_rescale: bool = False,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.sample_shape, self.num_classes = (in_channels, image_size, image_size), num_classes
        emb_dim = 4 * channels
        self.time = TimeEmbedding(channels, emb_dim, embedding, num_classes)
        block = dict(emb_dim=emb_dim, dropout=dropout, skip_rescale=skip_rescale, zero_init=zero_init)

        def attention(c: int) -> AttentionBlock:
            return AttentionBlock(c, attention_heads, skip_rescale, zero_init)

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        widths, c, res = [channels], channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(c, channels * mult, **block)]
                c = channels * mult
                if res in attention_resolutions:
                    layers.append(attention(c))
                self.down.append(nn.ModuleList(layers))
                widths.append(c)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                widths.append(c)
                res //= 2
        self.middle = nn.ModuleList([ResBlock(c, c, **block), attention(c), ResBlock(c, c, **block)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                layers = [ResBlock(c + widths.pop(), channels * mult, **block)]
                c = channels * mult
                if res in attention_resolutions:
                    layers.append(attention(c))
                self.up.append(nn.ModuleList(layers))
            if level > 0:
                self.up.append(
                    nn.ModuleList(
                        [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
                    )
                )
                res *= 2
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        if zero_init:
            nn.init.zeros_(self.out[-1].weight)
            nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time(t.expand(len(x)) if t.dim() == 0 else t, labels)
        h = self.conv_in(x)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, emb)
            skips.append(h)
        h = self._run(self.middle, h, emb)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(layers, h, emb)
        return self.out(h)
