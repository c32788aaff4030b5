"""Reference (real-data) statistics: computed once per key, cached on disk, reused across runs and sweeps.

Key: dataset (class path and its init args, without batch size / workers; the same for a DataModule it wraps,
e.g. ``PixelTokens.images``), split, resolution, a sha256 of a few of the images, number of images, number
and seed of the kept features, extractor name / class / preprocessing and the sha256 of its weights. Any
change gives another key and so another file.

Cache directory: ``cache_dir`` argument, else ``$LIT_GEN_STATS_DIR``, else ``$XDG_CACHE_HOME/lit_gen/stats``
(``~/.cache/lit_gen/stats``). File name: ``{dataset}-{split}-{resolution}px-{extractor}-{key hash}.npz``.

File format (``numpy.savez``, readable with ``np.load(path, allow_pickle=False)``):

- ``mu`` (D,) float64 and ``sigma`` (D, D) float64: feature mean and covariance over all ``num_samples``
  images (the same names as pytorch-fid's ``--save-stats`` files, which load here too, FID only);
- ``num_samples``: int64 scalar;
- ``features`` (M, D) float32: features of a seeded random subset of M ≤ ``max_features`` images, for KID
  and precision/recall/density/coverage;
- ``radii_k{k}`` (M,) float32: distance of each of those to its k-th nearest neighbour among them;
- ``key``: the key as a JSON string; ``format``: ``"lit_gen.stats/1"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_gen._lightning import CLI_HPARAMS_KEYS
from lit_gen.errors import LitGenError
from lit_gen.metrics.features import FeatureExtractor
from lit_gen.metrics.functional import knn_radii, mean_cov

FORMAT = "lit_gen.stats/1"
STATS_DIR_ENV = "LIT_GEN_STATS_DIR"
#: hyper-parameters that change how data is loaded but not which images it holds, and the CLI's bookkeeping
_LOADING_ONLY = {"batch_size", "num_workers", *CLI_HPARAMS_KEYS}


@dataclass
class ReferenceStats:
    """Statistics of the real features: mean/covariance over ``num_samples`` images, and the features of up to
    ``max_features`` of them (with their k-NN radii, computed on first use) for KID and PR/DC."""

    mean: Tensor
    cov: Tensor
    num_samples: int
    features: Tensor | None = None
    key: dict = field(default_factory=dict)
    radii: dict[int, Tensor] = field(default_factory=dict)

    @property
    def key_hash(self) -> str:
        return key_hash(self.key)

    def nn_radii(self, k: int) -> Tensor:
        if self.features is None:
            raise LitGenError("reference: these statistics hold no features (mean/covariance only): FID only")
        if k not in self.radii:
            self.radii[k] = knn_radii(self.features, k).cpu()
        return self.radii[k]

    def save(self, path: str | Path) -> Path:
        """Writes the documented ``.npz`` format atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "format": np.array(FORMAT),
            "key": np.array(json.dumps(self.key, sort_keys=True)),
            "mu": self.mean.double().cpu().numpy(),
            "sigma": self.cov.double().cpu().numpy(),
            "num_samples": np.array(self.num_samples, dtype=np.int64),
        }
        if self.features is not None:
            arrays["features"] = self.features.float().cpu().numpy()
        for k, radii in self.radii.items():
            arrays[f"radii_k{k}"] = radii.float().cpu().numpy()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, key: str = "stats") -> ReferenceStats:
        path = Path(path)
        if not path.is_file():
            raise LitGenError(f"{key}: statistics file '{path}' does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as err:
            raise LitGenError(f"{key}: '{path}' is not a readable .npz statistics file ({err})") from None
        if "mu" not in arrays or "sigma" not in arrays:
            raise LitGenError(f"{key}: '{path}' holds no 'mu'/'sigma' arrays (not a statistics file)")
        features = torch.from_numpy(arrays["features"]) if "features" in arrays else None
        radii = {
            int(name[len("radii_k") :]): torch.from_numpy(value)
            for name, value in arrays.items()
            if name.startswith("radii_k")
        }
        return cls(
            mean=torch.from_numpy(arrays["mu"]).double(),
            cov=torch.from_numpy(arrays["sigma"]).double(),
            num_samples=int(arrays["num_samples"]) if "num_samples" in arrays else -1,
            features=features,
            key=json.loads(str(arrays["key"])) if "key" in arrays else {"source": str(path)},
            radii=radii,
        )


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def default_cache_dir() -> Path:
    if os.environ.get(STATS_DIR_ENV):
        return Path(os.environ[STATS_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lit_gen" / "stats"


def cache_file(cache_dir: str | Path | None, key: dict) -> Path:
    """The cache file of ``key`` (see the module docstring for the naming)."""
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    dataset = str(key.get("dataset", {}).get("class_path", "data")).rsplit(".", 1)[-1].lower()
    name = f"{dataset}-{key.get('split')}-{key.get('resolution')}px-{key['extractor']['name']}-{key_hash(key)[:16]}"
    return directory / f"{name}.npz"


def dataset_description(datamodule) -> dict:
    """Class path and the init args that determine which images a DataModule yields; a DataModule it holds
    (e.g. the images of ``PixelTokens``, which saves no hyper-parameters) is described the same way."""
    cls = type(datamodule)
    hparams = dict(getattr(datamodule, "hparams", {}) or {})
    args = {k: v for k, v in hparams.items() if k not in _LOADING_ONLY}
    for name, value in vars(datamodule).items():
        if isinstance(value, LightningDataModule) and not name.startswith("_"):
            args[name] = dataset_description(value)
    return {
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "init_args": json.loads(json.dumps(args, default=str)),
    }


def split_dataset(datamodule, split: str) -> Dataset:
    """``train`` or ``val`` set of a DataModule (after ``prepare_data`` / ``setup``)."""
    if split not in ("train", "val"):
        raise LitGenError(f"reference_split: must be 'train' or 'val', got '{split}'")
    if getattr(datamodule, f"{split}_set", None) is None:
        datamodule.prepare_data()
        datamodule.setup("fit")
    dataset = getattr(datamodule, f"{split}_set", None)
    if dataset is None:
        raise LitGenError(f"reference_split: {type(datamodule).__name__} has no {split} set")
    if len(dataset) == 0:
        raise LitGenError(f"reference_split: the {split} set of {type(datamodule).__name__} is empty")
    return dataset


def data_fingerprint(dataset: Dataset, num_samples: int, probes: int = 8) -> str:
    """sha256 of the images at ``probes`` evenly spaced indices among the first ``num_samples``: tells apart
    data that the DataModule's hyper-parameters do not (a DataModule without them, changed files)."""
    digest = hashlib.sha256(str(num_samples).encode())
    for index in sorted({round(i * (num_samples - 1) / max(probes - 1, 1)) for i in range(probes)}):
        image = torch.as_tensor(images_of(dataset[index])).detach().cpu().contiguous()
        digest.update(f"{index}:{image.dtype}:{tuple(image.shape)}".encode())
        digest.update(image.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def reference_key(
    datamodule,
    split: str,
    extractor: FeatureExtractor,
    num_samples: int,
    max_features: int = 10_000,
    seed: int = 0,
) -> dict:
    """Every input that changes the statistics of the first ``num_samples`` images of a DataModule split."""
    dataset = split_dataset(datamodule, split)
    shape = tuple(images_of(dataset[0]).shape)
    return {
        "format": FORMAT,
        "dataset": dataset_description(datamodule),
        "split": split,
        "resolution": int(shape[-1]),
        "data_sha256": data_fingerprint(dataset, num_samples),
        "num_samples": int(num_samples),
        "features": {"num": min(int(max_features), int(num_samples)), "seed": int(seed)},
        "extractor": {
            "name": extractor.name,
            "class_path": f"{type(extractor).__module__}.{type(extractor).__qualname__}",
            "preprocessing": extractor.preprocessing,
            "weights_sha256": extractor.fingerprint(),
        },
    }


def images_of(batch) -> Tensor:
    """The image tensor of a DataLoader batch ((images, labels) tuples, dicts with 'image', or a tensor)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)):
        return batch[0]
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"]
    raise LitGenError(f"data: cannot find images in a batch of type {type(batch).__name__}")


def progress_bar(iterable: Iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        iterable, total=total, desc=desc, unit="batch", file=sys.stderr, disable=not enabled, leave=False
    )


@torch.no_grad()
def compute_reference(
    batches: Iterable[Tensor],
    extractor: FeatureExtractor,
    num_samples: int,
    max_features: int = 10_000,
    ks: Iterable[int] = (),
    key: dict | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    total_batches: int | None = None,
) -> ReferenceStats:
    """Streams ``num_samples`` images (in [0, 1]) through ``extractor`` once: float64 running sums for the
    mean/covariance, and the features of a seeded random subset of ``max_features`` images."""
    keep = torch.zeros(num_samples, dtype=torch.bool)
    keep[torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))[:max_features]] = True
    feature_sum = outer_sum = None
    kept, seen = [], 0
    extractor = extractor.to(device)
    for images in progress_bar(batches, total_batches, "reference features", progress):
        images = images[: num_samples - seen].to(device)
        features = extractor(images).double()
        if feature_sum is None:
            feature_sum = torch.zeros(features.shape[1], dtype=torch.float64, device=device)
            outer_sum = torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64, device=device)
        feature_sum += features.sum(0)
        outer_sum += features.T @ features
        kept.append(features[keep[seen : seen + len(features)].to(device)].float().cpu())
        seen += len(features)
        if seen >= num_samples:
            break
    if seen < 2:
        raise LitGenError(f"reference: needs at least 2 images, got {seen}")
    mean, cov = mean_cov(feature_sum, outer_sum, seen)
    stats = ReferenceStats(mean.cpu(), cov.cpu(), seen, torch.cat(kept), dict(key or {}))
    for k in ks:
        if len(stats.features) > k:
            stats.nn_radii(k)
    return stats


def reference_from_datamodule(
    datamodule,
    split: str,
    extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    max_samples: int | None = None,
    max_features: int = 10_000,
    ks: Iterable[int] = (3, 5),
    batch_size: int = 250,
    device: torch.device | str = "cpu",
    progress: bool = False,
    seed: int = 0,
) -> tuple[ReferenceStats, Path | None, bool]:
    """The reference statistics of a DataModule split: read from the cache when its key matches, else computed
    (in dataset order) and written there. Returns (stats, cache file or None, whether it was computed).
    ``seed`` draws the ``max_features`` images whose features are kept."""
    dataset = split_dataset(datamodule, split)
    num_samples = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    key = reference_key(datamodule, split, extractor, num_samples, max_features, seed)
    path = cache_file(cache_dir, key) if use_cache else None
    if path is not None and path.is_file():
        try:
            stats = ReferenceStats.load(path)
            if stats.key == key:
                return stats, path, False
        except LitGenError:
            pass  # unreadable (e.g. interrupted write): recompute and overwrite
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=getattr(datamodule, "num_workers", 0)
    )
    stats = compute_reference(
        (images_of(batch) for batch in loader),
        extractor,
        num_samples,
        max_features=max_features,
        ks=ks,
        key=key,
        device=device,
        seed=seed,
        progress=progress,
        total_batches=-(-num_samples // batch_size),
    )
    if path is not None:
        stats.save(path)
    return stats, path, True
