"""Quick single-seed probes of what moves the diffusion toy benchmark, outside Lightning.

A plain PyTorch loop (no Trainer, no logging, no callbacks; an EMA of the net without warm-up) around lit_gen's own
parts: the paths (``lit_gen.diffusion.EDM`` / ``FlowMatching``), ``lit_gen.nets.TimeMLP``, the samplers and
``ModeCoverage`` (2,500 samples, high quality within 3 std). The data are drawn directly from the mixture of
``lit_gen.data.Grid`` / ``Ring`` (fresh samples every batch, not the data module's fixed training set), so the
numbers rank settings; they are not the benchmark's (``run.py`` trains the configs through the CLI). Each probe
appends one JSON line: its settings, its training CPU seconds, and (high quality %, modes) per sampler.

    python experiments/diffusion_toy/explore.py --path edm --steps 20000 --end-factor 1 --data ring
    python experiments/diffusion_toy/explore.py --path edm --net every_layer --steps 8000 --end-factor 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_gen.diffusion import EDM, EDMHeun, FlowEuler, FlowHeun, FlowMatching
from lit_gen.metrics.modes import ModeCoverage
from lit_gen.nets import TimeMLP

HERE = Path(__file__).resolve().parent
SAMPLERS = {
    "FlowEuler 40": lambda: FlowEuler(40),
    "FlowEuler 16": lambda: FlowEuler(16),
    "FlowHeun 8 (15 NFE)": lambda: FlowHeun(8),
    "FlowHeun 16 (31 NFE)": lambda: FlowHeun(16),
    "EDMHeun 18 (35 NFE)": lambda: EDMHeun(18),
    "EDMHeun 10 (19 NFE)": lambda: EDMHeun(10),
}


class ScaledTime(nn.Module):
    """The net called with time * scale (e.g. 1000: DDPM's step-index range for flow matching's t in [0, 1])."""

    def __init__(self, net: nn.Module, scale: float) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: Tensor, t: Tensor, labels=None) -> Tensor:
        return self.net(x, t * self.scale)


def mixture(name: str) -> tuple[Tensor, float]:
    """(modes, std) of configs/toy_grid.yaml's and configs/toy_ring.yaml's data."""
    if name == "grid":
        coords = (-4.0, -2.0, 0.0, 2.0, 4.0)
        return torch.tensor([[x, y] for x in coords for y in coords]), 0.05
    angles = torch.arange(8) * 2 * math.pi / 8
    return torch.stack([angles.cos(), angles.sin()], 1), 0.01


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["grid", "ring"], default="grid")
    parser.add_argument("--path", choices=["fm", "edm"], default="fm")
    parser.add_argument("--net", choices=["concat", "every_layer"], default="concat")
    parser.add_argument("--embedding", choices=["positional", "fourier"], default="positional")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--t-distribution", choices=["path", "logitnormal"], default="path")
    parser.add_argument("--ot", action="store_true", help="flow matching with minibatch OT coupling")
    parser.add_argument("--sigma-data", type=float, default=0.5)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--end-factor", type=float, default=0.01, help="LinearLR's end factor (1: constant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(HERE / "explore.jsonl"))
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    modes, std = mixture(args.data)
    path = FlowMatching(0.0, ot=args.ot) if args.path == "fm" else EDM(sigma_data=args.sigma_data)
    hidden = [args.width] * args.depth
    model = ScaledTime(TimeMLP(2, hidden, 64, args.embedding, time_input=args.net), args.time_scale)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, args.end_factor, args.steps)

    start = time.process_time()
    for _ in range(args.steps):
        data = modes[torch.randint(len(modes), (args.batch,))] + std * torch.randn(args.batch, 2)
        noise = path.couple(data, torch.randn_like(data))
        if args.t_distribution == "logitnormal":  # Esser et al. 2024 (SD3): t = sigmoid(N(0, 1))
            t = torch.sigmoid(torch.randn(args.batch))
        else:
            t = path.sample_training_noise_level(args.batch)
        x_t = path.noisy(data, noise, t)
        loss = path.loss(model(*path.model_input(x_t, t)), data, noise, t).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
    result = {"settings": vars(args), "train_cpu_s": round(time.process_time() - start), "samplers": {}}

    noise = torch.randn(2500, 2, generator=torch.Generator().manual_seed(10_000 + args.seed))
    denoise = path.denoiser(ema.module)
    for name, make in SAMPLERS.items():
        metric = ModeCoverage(modes, std)
        metric.update(make()(denoise, noise))
        scores = metric.compute()
        result["samplers"][name] = [round(100 * float(scores["high_quality"]), 2), int(scores["modes"])]
    print(json.dumps(result))
    with open(args.results, "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
