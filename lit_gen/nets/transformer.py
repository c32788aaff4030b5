"""A decoder-only transformer (GPT-2 style, after Karpathy's nanoGPT), with optional rotary position embeddings,
QK-norm and RMSNorm, and a key/value cache for fast sampling.

Shapes: token ids ``(B, T)`` long, ``T <= block_size``; logits ``(B, T, vocab_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KVCache:
    """Keys and values of the tokens seen so far, one pair of ``(B, n_head, block_size, head_dim)`` tensors per
    layer; ``length`` is the number of cached positions (the position of the next token)."""

    def __init__(self, n_layer: int, batch: int, n_head: int, block_size: int, head_dim: int, like: Tensor):
        shape = (batch, n_head, block_size, head_dim)
        self.keys = [like.new_zeros(shape) for _ in range(n_layer)]
        self.values = [like.new_zeros(shape) for _ in range(n_layer)]
        self.length = 0


def rotary_tables(block_size: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin tables ``(block_size, head_dim // 2)`` of rotary position embeddings (Su et al. 2021)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotates the pairs ``(x[..., 2i], x[..., 2i + 1])`` of ``x (B, T, H, d)`` by the angles of positions
    ``0..T-1`` of the tables ``(T, d/2)``: one complex multiplication (as in LLaMA), which on a CPU costs less than
    half of rotating the two halves with real arithmetic."""
    rotation = torch.complex(cos, sin)[:, None, :]  # (T, 1, d/2)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def norm_layer(dim: int, bias: bool, rms_norm: bool) -> nn.Module:
    return nn.RMSNorm(dim) if rms_norm else nn.LayerNorm(dim, bias=bias)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        block_size: int,
        dropout: float,
        bias: bool,
        rotary: bool,
        qk_norm: bool,
        rms_norm: bool,
    ) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.dropout = n_head, n_embd // n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.q_norm = norm_layer(self.head_dim, bias, rms_norm) if qk_norm else None
        self.k_norm = norm_layer(self.head_dim, bias, rms_norm) if qk_norm else None
        self.rotary = rotary
        if rotary:
            cos, sin = rotary_tables(block_size, self.head_dim)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, self.head_dim) for t in self.c_attn(x).split(C, 2))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        start = cache.length if cache is not None else 0
        if self.rotary:
            cos, sin = self.cos[start : start + T], self.sin[start : start + T]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, n_head, T, head_dim)
        if cache is not None:
            if T > 1 and start > 0:
                raise ValueError("KVCache: several new tokens after a non-empty cache are not supported")
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k, v = cache.keys[layer][:, :, : start + T], cache.values[layer][:, :, : start + T]
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(C, 4C), GELU, Linear(4C, C), dropout."""

    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self, n_embd: int, n_head: int, block_size: int, dropout: float, bias: bool, **options
    ) -> None:
        super().__init__()
        rms_norm = options["rms_norm"]
        self.ln_1 = norm_layer(n_embd, bias, rms_norm)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout, bias, **options)
        self.ln_2 = norm_layer(n_embd, bias, rms_norm)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A GPT-2 style decoder-only transformer over ``vocab_size`` tokens (defaults: nanoGPT's Shakespeare-char
    GPU model).

    Args:
        vocab_size: number of token ids; must match the data's vocabulary (checked by the model at fit time).
        block_size: the context length (maximum sequence length).
        n_layer / n_head / n_embd: depth, attention heads and width (``n_embd`` divisible by ``n_head``).
        dropout: dropout on attention weights, residual branches and embeddings.
        bias: biases in linear layers and LayerNorms (GPT-2: True; nanoGPT's default: False).
        tie_weights: share the token embedding with the output projection (Press & Wolf 2017).
        rotary: rotary position embeddings (RoFormer) instead of learned absolute ones.
        qk_norm: normalise queries and keys per head before attention (QK-norm; with the blocks' kind of norm).
        rms_norm: RMSNorm instead of LayerNorm, in the blocks and for QK-norm. On a CPU, torch's RMSNorm costs
            ~3x a (fused) LayerNorm.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 256,
        n_layer: int = 6,
        n_head: int = 6,
        n_embd: int = 384,
        dropout: float = 0.2,
        bias: bool = False,
        tie_weights: bool = True,
        rotary: bool = False,
        qk_norm: bool = False,
        rms_norm: bool = False,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        if n_embd % n_head != 0 or (rotary and (n_embd // n_head) % 2 != 0):
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}) (twice, with rotary)")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = None if rotary else nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        options = {"rotary": rotary, "qk_norm": qk_norm, "rms_norm": rms_norm}
        self.h = nn.ModuleList(
            Block(n_embd, n_head, block_size, dropout, bias, **options) for _ in range(n_layer)
        )
        self.ln_f = norm_layer(n_embd, bias, rms_norm)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embedding (as nanoGPT reports it)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding and self.wpe is not None else n

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by role, for optimizers that treat them differently (``lit_gen.optim``): the hidden
        layers' weight ``matrices``, the ``embeddings`` (token and position embeddings and an untied output
        head), and the 1-D ``vectors`` (norm gains, biases)."""
        embeddings = [self.wte.weight] + ([self.wpe.weight] if self.wpe is not None else [])
        if self.lm_head.weight is not self.wte.weight:
            embeddings.append(self.lm_head.weight)
        ids = {id(p) for p in embeddings}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return {
            "matrices": [p for p in rest if p.dim() >= 2],
            "embeddings": embeddings,
            "vectors": [p for p in rest if p.dim() < 2],
        }

    def new_cache(self, batch: int, like: Tensor) -> KVCache:
        return KVCache(self.n_layer, batch, self.n_head, self.block_size, self.n_embd // self.n_head, like)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits ``(B, T, vocab_size)`` of the next token at every position of ``idx (B, T)``; with a ``cache``,
        ``idx`` continues the cached tokens (and the cache is extended)."""
        T = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of length {start + T} exceeds block_size {self.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.drop(x)
        for layer, block in enumerate(self.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        rng: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Yields ``max_new_tokens`` next tokens ``(B, 1)``, each sampled given ``idx`` and the tokens before it.

        The context is cropped to the last ``block_size`` tokens (as in nanoGPT). Keys and values are cached
        until the context is full; from then on each token re-reads the cropped window. Sampling draws from
        ``rng`` on the CPU, so a seed gives the same tokens on any device. ``temperature == 0`` is greedy.
        """
        seq = idx
        cache: KVCache | None = None
        for _ in range(max_new_tokens):
            if cache is not None and cache.length < self.block_size:
                logits = self(seq[:, -1:], cache)
            else:
                context = seq[:, -self.block_size :]
                cache = (
                    self.new_cache(seq.shape[0], self.wte.weight)
                    if context.shape[1] < self.block_size
                    else None
                )
                logits = self(context, cache)
            next_token = sample_next(logits[:, -1, :], temperature, top_k, rng).to(seq.device)
            seq = torch.cat((seq, next_token), dim=1)
            yield next_token


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of ``logits (B, V)``: softmax sampling at ``temperature`` from the ``top_k`` most
    likely tokens (all when None); greedy when ``temperature == 0``. Returns ``(B, 1)`` long on the CPU."""
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=rng)
