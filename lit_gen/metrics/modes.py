"""Mode coverage on Gaussian-mixture toy data (the VEEGAN / PacGAN protocol)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


class ModeCoverage(Metric):
    """Counts high-quality samples per mode.

    A sample is *high quality* when it lies within ``threshold`` standard deviations of its nearest mode
    (3 in the protocol). A mode is *captured* when it is the nearest mode of at least one high-quality sample.
    ``compute`` returns:

    - ``modes``: the number of captured modes;
    - ``high_quality``: the share of samples that are high quality;
    - ``reverse_kl``: KL(q || uniform) of the histogram ``q`` of high-quality samples over the modes
      (0 when every mode gets the same share; modes with no sample contribute 0). Without any high-quality
      sample there is no histogram; it is then log(number of modes), the worst value any histogram reaches
      (all samples on one mode), so that a generator capturing nothing never scores best.

    The states are sums, so the metric is exact under DDP (each rank updates with its own samples).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, modes: Tensor, std: float, threshold: float = 3.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("modes", torch.as_tensor(modes, dtype=torch.float32), persistent=False)
        self.std, self.threshold = float(std), float(threshold)
        self.add_state("counts", default=torch.zeros(len(self.modes), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        samples = samples.float().to(self.modes.device)
        distances = torch.cdist(samples, self.modes)
        nearest_distance, nearest = distances.min(dim=1)
        good = nearest_distance <= self.threshold * self.std
        self.counts += torch.bincount(nearest[good], minlength=len(self.modes))
        self.total += samples.shape[0]

    def compute(self) -> dict[str, Tensor]:
        counts = self.counts.float()
        high_quality = counts.sum()
        q = counts / high_quality.clamp_min(1.0)
        uniform = 1.0 / len(self.modes)
        reverse_kl = torch.where(q > 0, q * (q / uniform).log(), torch.zeros_like(q)).sum()
        if high_quality == 0:
            reverse_kl = reverse_kl.new_tensor(math.log(len(self.modes)))
        return {
            "modes": (self.counts > 0).sum().float(),
            "high_quality": high_quality / self.total.clamp_min(1).float(),
            "reverse_kl": reverse_kl,
        }
