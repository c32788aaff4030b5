"""Writers of tiny on-disk datasets for the tests, in the layouts torchvision and ``lit_gen.data`` read.

- ``write_mnist``: torchvision's ``MNIST/raw/`` layout from the MNIST subset shipped in ``tests/data/mnist``.
- ``write_cifar10``: a small ``cifar-10-batches-py`` folder in CIFAR-10's pickle format (random pixels).
- ``write_image_folder``: a few small PNGs of assorted sizes and colour modes in nested folders.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

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
