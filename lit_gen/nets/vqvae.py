"""VQ-VAE networks (van den Oord et al. 2017): the convolutional encoder/decoder used for CIFAR-10 and the
vector quantizer with its codebook (learned by gradient or by exponential moving averages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_gen.errors import LitGenError


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class VQEncoder(nn.Module):
    """Images (N, C, H, W) -> continuous latents z_e (N, embedding_dim, H/4, W/4): two stride-2 4x4 convs, two
    residual blocks and a 1x1 projection to the codebook dimension (the paper's CIFAR-10 encoder: 256 hidden
    units, so a 32 px image becomes an 8x8 grid of codes)."""

    def __init__(
        self,
        channels: int = 3,
        hidden: int = 256,
        res_hidden: int = 256,
        num_res: int = 2,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        self.channels, self.embedding_dim = channels, embedding_dim
        self.downsampling = 4
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, 2, 1),
            *[ResidualBlock(hidden, res_hidden) for _ in range(num_res)],
            nn.ReLU(),
            nn.Conv2d(hidden, embedding_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class VQDecoder(nn.Module):
    """Quantized latents (N, embedding_dim, h, w) -> images (N, C, 4h, 4w) (unbounded; the model centres
    data at 0): a 3x3 conv, two residual blocks and two stride-2 4x4 transposed convs."""

    def __init__(
        self,
        embedding_dim: int = 64,
        hidden: int = 256,
        res_hidden: int = 256,
        num_res: int = 2,
        channels: int = 3,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.net = nn.Sequential(
            nn.Conv2d(embedding_dim, hidden, 3, 1, 1),
            *[ResidualBlock(hidden, res_hidden) for _ in range(num_res)],
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, channels, 4, 2, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def ema_codebook_update(
    codebook: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor,
    weight: Tensor,
    counts: Tensor,
    sums: Tensor,
    decay: float,
    eps: float = 1e-5,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One EMA step of the codebook (van den Oord et al. 2017, appendix A.1), bias-corrected and
    Laplace-smoothed as Sonnet's ``VectorQuantizerEMA``.

    From 0: N_i <- decay N_i + (1 - decay) n_i, m_i <- decay m_i + (1 - decay) sum_j z_ij and
    w <- decay w + (1 - decay), where n_i is the number of encoder outputs assigned to code i in the batch and
    z_ij those outputs. w = 1 - decay^t is the same average of a constant 1, so N_i / w and m_i / w are the
    bias-corrected averages (as in Adam): after one step they are n_i and sum_j z_ij. The new code is
    e_i = (m_i / w) / N~_i with N~_i = (N_i / w + eps) / (sum N / w + K eps) * sum N / w, so a used code is the
    (moving) mean of its vectors; a code never assigned (N_i = 0) keeps its vector.

    Args:
        codebook: e (K, D); cluster_size: N (K,); embed_sum: m (K, D); weight: w (a 0-d tensor);
        counts: n (K,); sums: (K, D) per-code sums of the batch.
    Returns:
        (new e, new N, new m, new w).
    """
    weight = decay * weight + (1.0 - decay)
    cluster_size = decay * cluster_size + (1.0 - decay) * counts
    embed_sum = decay * embed_sum + (1.0 - decay) * sums
    size = cluster_size / weight
    total = size.sum()
    smoothed = (size + eps) / (total + size.numel() * eps) * total
    means = embed_sum / weight / smoothed.unsqueeze(1)
    return torch.where((cluster_size > 0).unsqueeze(1), means, codebook), cluster_size, embed_sum, weight


def codebook_perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the code histogram ``counts`` (K,): K when all codes are used equally, 1 for one code."""
    p = counts / counts.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


class VectorQuantizer(nn.Module):
    """A codebook of ``num_embeddings`` vectors of size ``embedding_dim``; maps each encoder output vector to
    its nearest code. Stateless in ``forward``; the model calls ``ema_update``, ``track_usage`` and
    ``restart_dead_codes`` in its training step.

    Args:
        num_embeddings: K, codebook size (512 in the paper's CIFAR-10 model).
        embedding_dim: D.
        ema: learn the codebook by exponential moving averages (appendix A.1) instead of the codebook loss.
        decay: decay of the EMA (0.99 in the paper); also used for the usage statistics.
        eps: Laplace smoothing of the EMA cluster sizes.
        dead_code_threshold: a code whose EMA assignment count per batch (``usage``, from 1) falls below this
            is restarted at a random encoder output of the current batch, its usage set to the threshold
            (Dhariwal et al. 2020, Jukebox); None disables restarts.
    """

    def __init__(
        self,
        num_embeddings: int = 512,
        embedding_dim: int = 64,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float | None = 1.0,
    ) -> None:
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise LitGenError(
                f"num_embeddings and embedding_dim must be positive, got {num_embeddings}, {embedding_dim}"
            )
        if not 0.0 <= decay < 1.0:
            raise LitGenError(f"decay must be in [0, 1), got {decay}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_code_threshold = dead_code_threshold
        if ema:
            # the moving averages of ``ema_codebook_update`` (N, m, w), all from 0
            self.register_buffer("codebook", torch.randn(num_embeddings, embedding_dim))
            self.register_buffer("cluster_size", torch.zeros(num_embeddings))
            self.register_buffer("embed_sum", torch.zeros(num_embeddings, embedding_dim))
            self.register_buffer("ema_weight", torch.zeros(()))
            self.register_load_state_dict_pre_hook(_unbiased_ema_weight)
        else:
            bound = 1.0 / num_embeddings
            self.codebook = nn.Parameter(torch.empty(num_embeddings, embedding_dim).uniform_(-bound, bound))
        # moving average of assignments per batch; starts at one, as in Jukebox, so the first training batch
        # restarts only the codes it does not use (at encoder outputs: a data-dependent initialisation)
        self.register_buffer("usage", torch.ones(num_embeddings))

    @staticmethod
    def flatten(z: Tensor) -> Tensor:
        """(N, D, H, W) -> (N*H*W, D)."""
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code (squared Euclidean distance) for each row of ``flat`` (M, D)."""
        codebook = self.codebook.to(flat.dtype)
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ codebook.t() + codebook.pow(2).sum(1).unsqueeze(0)
        )
        return distances.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for integer indices (N, H, W) -> (N, D, H, W)."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (z_q with straight-through gradients to z_e, indices (N, H, W), z_q attached to the codebook).

        The straight-through output equals z_q in value, and its gradient flows to z_e unchanged.
        """
        n, _, h, w = z_e.shape
        indices = self.nearest(self.flatten(z_e.detach())).reshape(n, h, w)
        z_q = self.lookup(indices)
        return z_e + (z_q - z_e).detach(), indices, z_q

    def counts(self, indices: Tensor) -> Tensor:
        """Assignments per code in a batch of indices (K,)."""
        return torch.bincount(indices.flatten(), minlength=self.num_embeddings).float()

    @torch.no_grad()
    def ema_update(self, counts: Tensor, sums: Tensor) -> None:
        """EMA codebook step from the batch's per-code counts (K,) and sums of encoder outputs (K, D)
        (already summed over processes under DDP)."""
        new = ema_codebook_update(
            self.codebook,
            self.cluster_size,
            self.embed_sum,
            self.ema_weight,
            counts,
            sums,
            self.decay,
            self.eps,
        )
        for buffer, value in zip((self.codebook, self.cluster_size, self.embed_sum, self.ema_weight), new):
            buffer.copy_(value)

    def code_sums(self, flat: Tensor, indices: Tensor) -> Tensor:
        """Per-code sums of the encoder outputs ``flat`` (M, D) assigned by ``indices`` (M,) -> (K, D)."""
        sums = torch.zeros(self.num_embeddings, flat.shape[1], device=flat.device, dtype=flat.dtype)
        return sums.index_add_(0, indices, flat)

    @torch.no_grad()
    def track_usage(self, counts: Tensor) -> None:
        self.usage.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)

    def dead_codes(self) -> Tensor:
        """Indices of the codes below ``dead_code_threshold`` (empty when restarts are off)."""
        if self.dead_code_threshold is None:
            return torch.zeros(0, dtype=torch.long, device=self.usage.device)
        return torch.nonzero(self.usage < self.dead_code_threshold).flatten()

    @torch.no_grad()
    def restart_codes(self, dead: Tensor, replacements: Tensor) -> None:
        """Moves the ``dead`` codes to ``replacements`` (len(dead), D). Each one's usage is set to the threshold
        (a code that is then used stays; one that is not is restarted again) and its EMA statistics to one
        assigned vector, the replacement."""
        if dead.numel() == 0:
            return
        self.codebook.data[dead] = replacements.to(self.codebook.dtype)
        self.usage[dead] = 1.0 if self.dead_code_threshold is None else self.dead_code_threshold
        if self.ema:  # bias-corrected averages of 1 and of the replacement
            self.cluster_size[dead] = self.ema_weight
            self.embed_sum[dead] = self.ema_weight * replacements.to(self.embed_sum.dtype)

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, ema={self.ema}, "
            f"decay={self.decay}, dead_code_threshold={self.dead_code_threshold}"
        )


def _unbiased_ema_weight(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Loads checkpoints from before the bias-corrected EMA: their averages are the corrected ones (w = 1)."""
    key = prefix + "ema_weight"
    if prefix + "cluster_size" in state_dict and key not in state_dict:
        state_dict[key] = torch.ones(())
