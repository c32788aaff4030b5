"""An MLP conditioned on time (and optionally a class) for 2-D toy data: the denoiser / velocity net of the
diffusion and flow-matching toy experiments."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_gen.nets.unet import TimeEmbedding


class TimeMLP(nn.Module):
    """forward(x, t, labels=None) -> same shape as x (B, data_dim): a SiLU MLP on x conditioned on embedding(t, label).

    The embedding is the U-Net's (positional or Fourier time features -> 2-layer MLP, plus a class embedding with a
    null class, index num_classes, when ``num_classes`` is set). ``time_input`` says where it enters:
    ``"concat"`` concatenates it to x at the input; ``"every_layer"`` adds it, through a Linear per layer, to every
    hidden layer's pre-activation, as the U-Net's residual blocks do. The denoiser of a mixture changes sharply
    with the noise level, and the toy benchmark's probes learned it faster with the time at every layer
    (experiments/diffusion_toy). ``sample_shape`` and ``num_classes`` tell ``lit_gen.models.Diffusion`` what to
    sample."""

    def __init__(
        self,
        data_dim: int = 2,
        hidden: list[int] | None = None,
        time_dim: int = 64,
        embedding: str = "positional",
        num_classes: int | None = None,
        time_input: str = "concat",
    ) -> None:
        super().__init__()
        if time_input not in ("concat", "every_layer"):
            raise ValueError(f"time_input: expected 'concat' or 'every_layer', got {time_input!r}")
        self.sample_shape, self.num_classes = (data_dim,), num_classes
        self.time = TimeEmbedding(time_dim, time_dim, embedding, num_classes)
        hidden = hidden or [256, 256, 256]
        if time_input == "concat":
            layers: list[nn.Module] = []
            width = data_dim + time_dim
            for h in hidden:
                layers += [nn.Linear(width, h), nn.SiLU()]
                width = h
            layers.append(nn.Linear(width, data_dim))
            self.net = nn.Sequential(*layers)
            self.time_layers = None
        else:
            widths = [data_dim, *hidden]
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
            self.time_layers = nn.ModuleList(nn.Linear(time_dim, h) for h in hidden)
            self.out = nn.Linear(hidden[-1], data_dim)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time(t.expand(len(x)) if t.dim() == 0 else t, labels)
        if self.time_layers is None:
            return self.net(torch.cat([x, emb], dim=1))
        h = x
        for layer, time_layer in zip(self.layers, self.time_layers):
            h = nn.functional.silu(layer(h) + time_layer(emb))
        return self.out(h)
