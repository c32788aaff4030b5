"""Gaussian paths for the diffusion tests, named by class path in their configs (``helpers.diffusion.X``)."""

from __future__ import annotations

from torch import Tensor

from lit_gen.diffusion import FlowMatching
from lit_gen.diffusion.paths import ot_coupling


class RankShardedOT(FlowMatching):
    """``FlowMatching(ot=True)`` coupling one batch as ``shards`` DDP ranks with a ``1 / shards`` share each do:
    the rows ``r, r + shards, ...`` (rank ``r``'s samples, ``ResumableSampler``'s sharding, and its rows of the
    global noise draw) are paired among themselves only."""

    def __init__(self, shards: int = 2, sigma_min: float = 0.0) -> None:
        super().__init__(sigma_min, ot=True)
        self.shards = shards

    def couple(self, data: Tensor, noise: Tensor) -> Tensor:
        coupled = noise.clone()
        for rank in range(self.shards):
            coupled[rank :: self.shards] = ot_coupling(noise[rank :: self.shards], data[rank :: self.shards])
        return coupled
