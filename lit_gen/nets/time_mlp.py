"""An MLP conditioned on time (and optionally a class) for 2-D toy data: the denoiser / velocity net of the
diffusion and flow-matching toy experiments."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_gen.nets.unet import TimeEmbedding


class TimeMLP(nn.Module):
    """forward(x, t, labels=None) -> same shape as x (B, data_dim): SiLU MLP on [x, embedding(t, label)].

    The embedding is the U-Net's (positional or Fourier time features -> 2-layer MLP, plus a class embedding with a
    null class, index num_classes, when ``num_classes`` is set). ``sample_shape`` and ``num_classes`` tell
    ``lit_gen.models.Diffusion`` what to sample."""

    def __init__(
        self,
        data_dim: int = 2,
        hidden: list[int] | None = None,
        time_dim: int = 64,
        embedding: str = "positional",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.sample_shape, self.num_classes = (data_dim,), num_classes
        self.time = TimeEmbedding(time_dim, time_dim, embedding, num_classes)
        layers: list[nn.Module] = []
        width = data_dim + time_dim
        for h in hidden or [256, 256, 256]:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time(t.expand(len(x)) if t.dim() == 0 else t, labels)
        return self.net(torch.cat([x, emb], dim=1))
