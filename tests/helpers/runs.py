"""What fits leave in their run directories: run folders, last checkpoints compared bitwise, CSV rows."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


def run_dirs(root: Path | str = "runs") -> list[Path]:
    """Run directories (folders holding config.yaml or checkpoints) below ``root``."""
    root = Path(root)
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []


def last_checkpoint(root: Path) -> dict:
    """The ``last.ckpt`` of the one run below ``root``."""
    (path,) = root.glob("*/*/checkpoints/last.ckpt")
    return torch.load(path, map_location="cpu", weights_only=True)


def differences(a, b, path: str = "") -> list[str]:
    """Paths at which two checkpoint trees differ (tensors compared bitwise)."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [f"{path} (keys)"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{path} (length)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the run's CSV log (``csv/metrics.csv``)."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))
