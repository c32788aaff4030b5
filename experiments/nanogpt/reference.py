"""The reference for ``run.py``: nanoGPT's ``train.py`` loop for its Shakespeare-char CPU quickstart, in plain PyTorch.

This is Karpathy's training loop reduced to what the CPU quickstart uses (no DDP, no autocast, no compile,
no gradient accumulation), with nanoGPT's random stream: ``torch.manual_seed(seed)`` before the model is built,
then every training and evaluation batch drawn from the global generator by ``torch.randint``, windows cut from
a ``uint16`` token array. The network is ``lit_gen.nets.GPT``, which is nanoGPT's ``model.py`` (same modules,
initialisation and weight tying). Settings are the quickstart's:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 \
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 \
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

i.e. AdamW(lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices and embeddings), 100 warm-up steps, cosine
to 1e-4 at step 2,000, clipping at 1.0, evaluation on 20 random batches per split every 250 steps, a checkpoint
whenever the validation loss improves. Prints one JSON line: the last validation loss, the loss on the whole
validation split (computed after the clock stops), the wall time from interpreter start and the peak memory.

    python experiments/nanogpt/reference.py --data ../shared/data/text/tinyshakespeare.txt --seed 1337
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: the wall time covers what a `fit` process covers

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lit_gen.nets import GPT  # noqa: E402


def get_lr(it: int, lr: float, warmup: int, decay_iters: int, min_lr: float) -> float:
    """nanoGPT's schedule: linear warm-up, cosine decay to ``min_lr`` at ``decay_iters``, then constant."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


@torch.no_grad()
def full_split_loss(network: torch.nn.Module, tokens: np.ndarray, block_size: int) -> float:
    """Mean next-token loss (nats) of ``network`` over all of ``tokens`` in non-overlapping windows of
    ``block_size``: the benchmark's low-noise validation loss (``run.py`` scores lit_gen's runs with it too)."""
    network.eval()
    data = torch.from_numpy(tokens.astype(np.int64))
    n = (len(data) - 1) // block_size
    x, y = data[: n * block_size].view(n, block_size), data[1 : n * block_size + 1].view(n, block_size)
    total = 0.0
    for i in range(0, n, 64):
        logits = network(x[i : i + 64])
        total += float(F.cross_entropy(logits.flatten(0, 1), y[i : i + 64].flatten(), reduction="sum"))
    return total / (n * block_size)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="Tiny Shakespeare (input.txt).")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--max_iters", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    block_size, batch_size, eval_interval, eval_iters = 64, 12, 250, 20
    lr, min_lr, warmup = 1e-3, 1e-4, 100

    # nanoGPT's data/shakespeare_char/prepare.py: sorted characters, first 90 % train, uint16 arrays
    text = args.data.read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    tokens = np.array([index[ch] for ch in text], dtype=np.uint16)
    n = len(tokens)
    splits = {"train": tokens[: int(n * 0.9)], "val": tokens[int(n * 0.9) :]}
    vocab_size = len(chars)

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        data = splits[split]
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y

    torch.manual_seed(args.seed)
    model = GPT(vocab_size, block_size, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        out = {
            split: float(np.mean([loss_of(*get_batch(split)).item() for _ in range(eval_iters)]))
            for split in splits
        }
        model.train()
        return out

    out_dir = Path(tempfile.mkdtemp(prefix="nanogpt-reference-"))
    best_val, last_val, curve = 1e9, None, []
    x, y = get_batch("train")
    it = 0
    while True:
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it, lr, warmup, args.max_iters, min_lr)
        if it % eval_interval == 0 or it == args.max_iters:  # (2,000 is a multiple of 250, as in nanoGPT)
            losses = estimate_loss()
            last_val = losses["val"]
            curve.append((it, round(last_val, 4)))
            if it > 0 and last_val < best_val:
                best_val = last_val
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict()}, out_dir / "ckpt.pt"
                )
        if it >= args.max_iters:
            break
        loss = loss_of(x, y)
        x, y = get_batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        it += 1
    wall = time.perf_counter() - STARTED
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    val_loss_full = full_split_loss(model, splits["val"], block_size)  # untimed, as run.py scores lit_gen
    result = {
        "config": "reference",
        "seed": args.seed,
        "steps": args.max_iters,
        "val_loss": round(last_val, 4),
        "val_curve": curve,
        "val_loss_full": round(val_loss_full, 4),
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(peak_gb, 3),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
