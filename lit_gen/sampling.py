"""Writing samples to disk: image grids, individual PNGs, raw tensors and 2-D scatter plots.

File layout written by ``python -m lit_gen sample`` into ``--out_dir``:

- ``samples.pt``: the raw samples as one tensor saved with ``torch.save`` — images (N, C, H, W) float32 in
  [0, 1], points (N, D) float32, or tokens (N, T) int64. Load with ``torch.load(path)``. (Text models write
  ``samples.txt`` instead: ``lit_gen.commands.sample.write_text_samples``.)
- images: ``grid.png`` (all samples) and ``images/000000.png``, ``images/000001.png``, ...
- 2-D points: ``scatter.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from lit_gen.checkpoints import new_temp_file


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(path, suffix=path.suffix)
    os.close(fd)
    return tmp


def save_image_grid(images: Tensor, path: Path, nrow: int = 8) -> Path:
    """One PNG grid of images in [0, 1] (written to a temp file, then renamed)."""
    tmp = _atomic_target(path)
    save_image(images.detach().float().cpu(), tmp, nrow=nrow, padding=2, format="png")
    os.replace(tmp, path)
    return path


def save_scatter(points: Tensor, path: Path, modes: Tensor | None = None, title: str | None = None) -> Path:
    """A scatter plot of 2-D samples, with the true modes (when known) as red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = points.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, label="samples")
    if modes is not None:
        modes = torch.as_tensor(modes).cpu()
        ax.scatter(modes[:, 0], modes[:, 1], s=40, c="red", marker="x", label="modes")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    tmp = _atomic_target(path)
    fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_samples(
    samples: Tensor, out_dir: Path, nrow: int | None = None, modes: Tensor | None = None
) -> list[Path]:
    """Writes the sample files described in this module's docstring; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().cpu()
    raw = out_dir / "samples.pt"
    tmp = _atomic_target(raw)
    torch.save(samples, tmp)
    os.replace(tmp, raw)
    written = [raw]
    if samples.dim() == 4:
        nrow = nrow or max(1, int(round(samples.shape[0] ** 0.5)))
        written.append(save_image_grid(samples, out_dir / "grid.png", nrow=nrow))
        images_dir = out_dir / "images"
        images_dir.mkdir(exist_ok=True)
        for i, image in enumerate(samples):
            save_image(image.float(), images_dir / f"{i:06d}.png")
        written.append(images_dir)
    elif samples.dim() == 2 and samples.is_floating_point():
        written.append(save_scatter(samples, out_dir / "scatter.png", modes=modes))
    return written
