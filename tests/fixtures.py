"""Writers of tiny on-disk datasets for the tests, in the layouts torchvision and ``lit_gen.data`` read.

- ``write_mnist``: torchvision's ``MNIST/raw/`` layout from the MNIST subset shipped in ``tests/data/mnist``.
- ``write_cifar10``: a small ``cifar-10-batches-py`` folder in CIFAR-10's pickle format (random pixels).
- ``write_image_folder``: a few small PNGs of assorted sizes and colour modes in nested folders.

Also tiny configs for tests that train a few steps, and ``lightning_log`` to see what Lightning reports.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from lightning.pytorch import Callback

#: the MNIST files torchvision expects under ``{data_dir}/MNIST/raw`` (decompressed)
MNIST_FILES = ("images-idx3-ubyte", "labels-idx1-ubyte")

CIFAR10_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_mnist(data_dir: Path, mnist: Path) -> Path:
    """Writes ``{data_dir}/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` and returns ``data_dir``.

    ``mnist`` holds gzipped IDX files named as MNIST's test set (``t10k-*.gz``; the tests ship the first 1,000 test
    digits): they serve as both the train and the t10k split: torchvision's ``MNIST`` checks that all four raw files
    exist (it checks no checksum on the decompressed raw files) and reads the split it is asked for.
    """
    raw = Path(data_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        data = gzip.decompress((Path(mnist) / f"t10k-{name}.gz").read_bytes())
        for split in ("train", "t10k"):
            (raw / f"{split}-{name}").write_bytes(data)
    return Path(data_dir)


def _cifar_batch(num: int, rng: np.random.Generator, label: str) -> dict:
    return {
        "batch_label": label,
        "labels": rng.integers(0, 10, size=num).tolist(),
        "data": rng.integers(0, 256, size=(num, 3 * 32 * 32), dtype=np.uint8),
        "filenames": [f"img_{i:05d}.png" for i in range(num)],
    }


def write_cifar10(data_dir: Path, per_batch: int = 8, num_test: int = 16, seed: int = 0) -> Path:
    """Writes ``{data_dir}/cifar-10-batches-py`` with five training batches of ``per_batch`` images, a test
    batch and ``batches.meta``, in the pickle format of the real archive (rows of 3,072 uint8: the red, green
    and blue 32x32 planes). Returns ``data_dir``.

    torchvision verifies each file against the MD5 of the real archive, which no small fake can match: tests
    using this folder must run in-process with the ``cifar10_skip_md5`` fixture (it checks existence only).
    """
    folder = Path(data_dir) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {
        name: _cifar_batch(per_batch, rng, f"training batch {name[-1]} of 5")
        for name in CIFAR10_TRAIN_BATCHES
    }
    batches["test_batch"] = _cifar_batch(num_test, rng, "testing batch 1 of 1")
    batches["batches.meta"] = {
        "label_names": CIFAR10_CLASSES,
        "num_cases_per_batch": per_batch,
        "num_vis": 3072,
    }
    for name, content in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(content, f)
    return Path(data_dir)


def write_image_folder(root: Path, num: int = 20, seed: int = 0) -> Path:
    """Writes ``num`` PNGs (sizes 20..47 px, not square; modes RGB, L and RGBA) into ``root`` and two nested
    class folders, plus a ``notes.txt`` that an image folder must ignore. Returns ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    modes = {"RGB": 3, "L": 1, "RGBA": 4}
    for i in range(num):
        folder = root / ("" if i % 3 == 0 else f"class_{i % 3}")
        folder.mkdir(parents=True, exist_ok=True)
        mode = list(modes)[i % len(modes)]
        height, width = int(rng.integers(20, 48)), int(rng.integers(20, 48))
        pixels = rng.integers(0, 256, size=(height, width, modes[mode]), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels)  # mode from the shape
        assert image.mode == mode
        image.save(folder / f"img_{i:03d}.png")
    (root / "notes.txt").write_text("not an image\n")
    return root


# --- tiny configs for tests that train a few steps ------------------------------------------------------------

#: a DCGAN on the embedded digits at 8 px with 8-wide nets: 2 batches (4 optimizer steps) take about a second
TINY_IMAGE_GAN = """\
# tiny DCGAN on 8 px digits for the tests
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 4            # 2 batches: one D and one G step each
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
  callbacks:
    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 1, num_samples: 16}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.DCGANGenerator
      init_args: {latent_dim: 8, channels: 1, image_size: 8, width: 8}
    discriminator:
      class_path: lit_gen.nets.DCGANDiscriminator
      init_args: {channels: 1, image_size: 8, width: 8}
    ema_decay: 0.9
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 16}
"""

#: a PacGAN2 MLP GAN on the ring of 8 Gaussians with the mode metrics
TINY_TOY_GAN = """\
# tiny MLP GAN on the ring for the tests
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 4
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
  callbacks:
    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 1, num_samples: 200}
    - class_path: lit_gen.callbacks.ModeMetrics
      init_args: {every_n_batches: 1, num_samples: 200}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {latent_dim: 2, hidden: [16, 16]}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {data_dim: 4, hidden: [16, 16]}
    pack: 2
    ema_decay: null
data:
  class_path: lit_gen.data.Ring
  init_args: {num_train: 1000, num_val: 100, batch_size: 32}
"""


def write_config(path: Path, text: str) -> Path:
    """Writes a config file (its stem becomes the run name) and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextlib.contextmanager
def lightning_log() -> Iterator[list[str]]:
    """The messages Lightning logs (``rank_zero_info``) inside the block."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch")  # it does not propagate to "lightning"
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


class FailAtTrainEnd(Callback):
    """Fails a fit after its last batch (and so after the final ``last.ckpt``), as a late crash would."""

    def on_train_end(self, trainer, pl_module) -> None:
        raise RuntimeError("failed at the end of training")
