"""Shared set-up of the FID benchmarks: the real MNIST test set (``../shared/data/mnist``, benchmarks only) in
torchvision's layout, and a fixed set of "generated" images derived from it."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def write_mnist(data_dir: Path) -> Path:
    """``{data_dir}/MNIST/raw`` from the 10,000 MNIST test images (they serve as both splits)."""
    raw = Path(data_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        data = gzip.decompress((SHARED_MNIST / f"t10k-{name}.gz").read_bytes())
        for split in ("train", "t10k"):
            (raw / f"{split}-{name}").write_bytes(data)
    return Path(data_dir)


def mnist_images() -> torch.Tensor:
    """The 10,000 MNIST test images as (N, 1, 28, 28) floats in [0, 1]."""
    data = gzip.decompress((SHARED_MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).view(-1, 1, 28, 28).float() / 255.0


def fake_images(count: int, seed: int = 0) -> torch.Tensor:
    """Stand-in "generated" images: MNIST digits, blurred and noised, quantised to uint8 levels."""
    g = torch.Generator().manual_seed(seed)
    real = mnist_images()[torch.randperm(10_000, generator=g)[:count]]
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1)
    noisy = (blurred + 0.1 * torch.randn(blurred.shape, generator=g)).clamp(0, 1)
    return (noisy * 255).round() / 255


def load_average() -> str:
    try:
        return (
            subprocess.run(["uptime"], capture_output=True, text=True)
            .stdout.strip()
            .split("load average:")[1]
        )
    except Exception:
        return str(os.getloadavg())
