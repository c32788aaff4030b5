"""``python -m lit_gen evaluate``: FID / KID / IS / precision-recall / density-coverage of a checkpoint's samples
or of a folder of images, against a DataModule split or a statistics file.

    python -m lit_gen evaluate --ckpt_path runs/gan/<run>/checkpoints/last.ckpt --num_samples 10000
    python -m lit_gen evaluate --images samples/ --data lit_gen.data.CIFAR10 --data.data_dir data
    python -m lit_gen evaluate --images samples/ --stats cifar10-train.npz
    python -m lit_gen evaluate --stats_only --data lit_gen.data.CIFAR10 --data.data_dir data   # precompute
    python -m lit_gen evaluate --stats_only --images real/ --out real.npz                     # like --save-stats

Prints a table and writes a JSON file (``--out``; default ``<run dir>/eval/<checkpoint>-<extractor>.json`` for
a checkpoint, ``./evaluate-<extractor>.json`` for a folder) with every metric, the sample counts, the
extractor (name, preprocessing, weights sha256) and the reference key.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, DefaultHelpFormatter, Namespace
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

import lit_gen
from lit_gen.checkpoints import load_datamodule, load_model, read_checkpoint, refused_load
from lit_gen.errors import LitGenError
from lit_gen.metrics.features import FeatureExtractor, InceptionV3Features, as_extractor
from lit_gen.metrics.generative import METRICS, GenerativeMetrics
from lit_gen.metrics.reference import (
    ReferenceStats,
    compute_reference,
    progress_bar,
    reference_from_datamodule,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help (types, defaults) with the description's lines kept (its examples)."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m lit_gen evaluate",
        exit_on_error=False,
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="Checkpoint written by `fit`.")
    parser.add_argument(
        "--images", type=str | None, default=None, help="Folder of images (recursive) or a samples.pt tensor."
    )
    parser.add_argument(
        "--data", type=LightningDataModule | None, default=None, help="Reference DataModule (class_path)."
    )
    parser.add_argument("--split", type=str, default="train", help="Reference split of --data: train or val.")
    parser.add_argument("--stats", type=str | None, default=None, help="Reference statistics file (.npz).")
    parser.add_argument(
        "--extractor",
        type=nn.Module | None,
        default=None,
        help="Feature extractor (class_path); default lit_gen.metrics.InceptionV3Features.",
    )
    parser.add_argument("--metrics", type=list[str], default=list(METRICS), help="Subset of fd kd is pr dc.")
    parser.add_argument("--num_samples", type=int, default=10_000, help="Samples generated from --ckpt_path.")
    parser.add_argument("--reference_samples", type=int | None, default=None, help="Cap on real images.")
    parser.add_argument("--max_reference_features", type=int, default=10_000, help="Real features kept.")
    parser.add_argument("--kid_subsets", type=int, default=100)
    parser.add_argument("--kid_subset_size", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=100, help="Images per forward pass.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated noise.")
    parser.add_argument(
        "--ema", type=bool, default=True, help="Sample from EMA weights where the model has them."
    )
    parser.add_argument("--device", type=str, default="cpu", help="torch device, e.g. cpu or cuda.")
    parser.add_argument("--cache_dir", type=str | None, default=None, help="Reference statistics cache.")
    parser.add_argument("--use_cache", type=bool, default=True, help="Read/write the statistics cache.")
    parser.add_argument(
        "--stats_only", "--stats-only", type=bool, default=False, help="Only compute reference statistics."
    )
    parser.add_argument(
        "--out", type=str | None, default=None, help="Output JSON (or .npz with --stats_only)."
    )
    parser.add_argument("--progress", type=bool, default=True, help="Progress bars on stderr.")
    return parser


# --- inputs --------------------------------------------------------------------------------------------------


class ImageFiles(Dataset):
    """Image files as float tensors in [0, 1] with their own channels (1 or 3; alpha dropped)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        from torchvision.io import ImageReadMode, decode_image

        try:
            image = decode_image(str(self.files[index]), mode=ImageReadMode.UNCHANGED)
        except Exception as err:
            raise LitGenError(f"images: cannot read '{self.files[index]}' ({err})") from None
        image = image[:1] if image.shape[0] == 2 else image[:3]
        return image.float() / 255.0


def image_batches(path: Path, batch_size: int) -> tuple[list[Tensor] | DataLoader, int]:
    """Batches of a folder of images or of a ``samples.pt`` tensor, and how many images there are."""
    if path.is_file():
        try:
            samples = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise refused_load("images", path, err, what="a tensor file") from None
        if not isinstance(samples, Tensor) or samples.dim() != 4:
            raise LitGenError(f"images: '{path}' does not hold an image tensor (N, C, H, W)")
        samples = samples.float() / 255.0 if samples.dtype == torch.uint8 else samples.float()
        return list(samples.split(batch_size)), len(samples)
    if not path.is_dir():
        raise LitGenError(f"images: '{path}' is neither a folder of images nor a samples.pt file")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LitGenError(f"images: no images ({', '.join(IMAGE_EXTENSIONS)}) found under '{path}'")
    return DataLoader(ImageFiles(files), batch_size=batch_size, shuffle=False), len(files)


def generated_batches(
    model, num_samples: int, batch_size: int, seed: int, ema: bool, device: torch.device, source: dict
):
    """Samples from a model, ``batch_size`` at a time, from a seeded noise generator. A model that counts its
    network evaluations per sample batch (``last_nfe``: diffusion) has the count recorded in ``source``."""
    rng = torch.Generator().manual_seed(seed)
    kwargs = {"ema": ema} if "ema" in inspect.signature(model.generate).parameters else {}
    for start in range(0, num_samples, batch_size):
        with torch.no_grad():
            samples = model.generate(min(batch_size, num_samples - start), rng=rng, **kwargs)
        if hasattr(model, "last_nfe"):
            source["nfe"] = int(model.last_nfe)
        if samples.dim() != 4 or not samples.is_floating_point():
            raise LitGenError(
                f"ckpt_path: {type(model).__name__} generates {tuple(samples.shape)} {samples.dtype}, not images"
            )
        yield samples.to(device)


def checked_batches(batches, what: str):
    """Turns a mix of image sizes in a folder into a one-line error."""
    try:
        yield from batches
    except RuntimeError as err:
        if "stack expects each tensor to be equal size" in str(err):
            raise LitGenError(f"{what}: all images must have the same size and channels") from None
        raise


# --- output --------------------------------------------------------------------------------------------------


def format_table(values: dict[str, float], counts: dict[str, int]) -> str:
    rows = [(name, f"{value:.6g}") for name, value in values.items()]
    rows += [(name, str(count)) for name, count in counts.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def write_json(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def default_out(args, extractor: FeatureExtractor) -> Path:
    if args.ckpt_path:
        ckpt = Path(args.ckpt_path)
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        return run_dir / "eval" / f"{ckpt.stem}-{extractor.name}.json"
    return Path(f"evaluate-{extractor.name}.json")


# --- the modes ----------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = build_parser()
    if any(arg in ("-h", "--help") for arg in argv):
        sys.stdout.write(short_help(parser))
        return
    args = parser.instantiate_classes(parser.parse_args(argv))
    check_arguments(args)
    device = usable_device(args.device)
    extractor = as_extractor(args.extractor) if args.extractor is not None else InceptionV3Features()
    extractor = extractor.to(device)
    if args.stats_only:
        write_reference(args, extractor, device)
    elif args.ckpt_path:
        evaluate_checkpoint(args, extractor, device)
    else:
        evaluate_images(args, extractor, device)


def short_help(parser: ArgumentParser) -> str:
    """The parser's help without jsonargparse's "known subclasses" lists (for ``--extractor``, every
    ``nn.Module`` in torch: ~750 lines)."""
    return re.sub(r",\s+known\s+subclasses:[^)]*", "", parser.format_help())


def check_arguments(args: Namespace) -> None:
    for key in ("num_samples", "batch_size", "max_reference_features", "kid_subsets", "kid_subset_size"):
        if getattr(args, key) < 1:
            raise LitGenError(f"{key} must be a positive integer, got {getattr(args, key)}")
    if args.split not in ("train", "val"):
        raise LitGenError(f"split: must be 'train' or 'val', got '{args.split}'")
    if args.ckpt_path and args.images:
        raise LitGenError("ckpt_path/images: give one source of samples, not both")
    if not (args.stats_only or args.ckpt_path or args.images):
        raise LitGenError("ckpt_path/images: give --ckpt_path CKPT or --images FOLDER")


def usable_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise LitGenError(f"device: cannot use '{name}' ({err})") from None
    return device


def write_reference(args: Namespace, extractor: FeatureExtractor, device: torch.device) -> None:
    """``--stats_only``: the reference statistics of ``--images``, or of ``--data`` (else the checkpoint's
    data), written to ``--out`` (and the statistics cache)."""
    if args.images:
        if not args.out:
            raise LitGenError("out: --stats_only --images needs --out FILE.npz")
        stats = reference_of_images(args, extractor, device)
        path = stats.save(args.out)
    else:
        datamodule = args.data
        if datamodule is None and args.ckpt_path:
            datamodule = load_datamodule(read_checkpoint(args.ckpt_path))
        if datamodule is None:
            raise LitGenError("data: --stats_only needs --data (a DataModule) or --images")
        stats, path = reference_of_data(args, datamodule, extractor, device)
        if args.out:
            path = stats.save(args.out)
    print(f"lit_gen: wrote statistics of {stats.num_samples} images to {path} (key {stats.key_hash[:16]})")


def evaluate_checkpoint(args: Namespace, extractor: FeatureExtractor, device: torch.device) -> None:
    """Scores ``--num_samples`` samples of the checkpoint's model against ``--stats``, ``--data`` or the data
    the model was trained on."""
    model, checkpoint = load_model(args.ckpt_path)
    model.to(device)
    datamodule = args.data
    if datamodule is None and not args.stats:
        datamodule = load_datamodule(checkpoint)
    reference, reference_path = reference_of(args, datamodule, extractor, device)
    source = {"ckpt_path": str(args.ckpt_path), "seed": args.seed, "ema": args.ema}
    batches = generated_batches(model, args.num_samples, args.batch_size, args.seed, args.ema, device, source)
    total = -(-args.num_samples // args.batch_size)
    score(args, extractor, reference, reference_path, batches, total, source, device)


def evaluate_images(args: Namespace, extractor: FeatureExtractor, device: torch.device) -> None:
    """Scores a folder of images (or a ``samples.pt``) against ``--stats`` or ``--data``."""
    reference, reference_path = reference_of(args, args.data, extractor, device)
    batches, _ = image_batches(Path(args.images), args.batch_size)
    source = {"images": str(args.images)}
    score(args, extractor, reference, reference_path, batches, len(batches), source, device)


# --- references and scores ------------------------------------------------------------------------------------


def reference_of(
    args: Namespace, datamodule: LightningDataModule | None, extractor: FeatureExtractor, device: torch.device
) -> tuple[ReferenceStats, Path | None]:
    """The real data's statistics: ``--stats``, else those of ``datamodule``."""
    if args.stats:
        return ReferenceStats.load(args.stats, key="stats"), Path(args.stats)
    if datamodule is None:
        raise LitGenError("data: give the real data as --data (a DataModule class_path) or --stats FILE.npz")
    return reference_of_data(args, datamodule, extractor, device)


def reference_of_data(
    args: Namespace, datamodule: LightningDataModule, extractor: FeatureExtractor, device: torch.device
) -> tuple[ReferenceStats, Path | None]:
    """The statistics of ``--split`` of ``datamodule``, from the cache or computed (and cached)."""
    stats, path, computed = reference_from_datamodule(
        datamodule,
        args.split,
        extractor,
        cache_dir=args.cache_dir,
        use_cache=args.use_cache,
        max_samples=args.reference_samples,
        max_features=args.max_reference_features,
        batch_size=args.batch_size,
        device=device,
        progress=args.progress,
    )
    print(f"lit_gen: reference {'computed' if computed else 'read from cache'}: {path or '(not cached)'}")
    return stats, path


def reference_of_images(args: Namespace, extractor: FeatureExtractor, device: torch.device) -> ReferenceStats:
    """The statistics of ``--images``, keyed by their resolved path and count."""
    batches, count = image_batches(Path(args.images), args.batch_size)
    key = {
        "images": str(Path(args.images).resolve()),
        "num_samples": count,
        "features": {"num": min(args.max_reference_features, count), "seed": 0},
        "extractor": extractor.describe(),
    }
    return compute_reference(
        checked_batches(batches, "images"),
        extractor,
        count,
        max_features=args.max_reference_features,
        ks=(3, 5),
        key=key,
        device=device,
        progress=args.progress,
        total_batches=len(batches),
    )


def score(
    args: Namespace,
    extractor: FeatureExtractor,
    reference: ReferenceStats,
    reference_path: Path | None,
    batches,
    total: int,
    source: dict,
    device: torch.device,
) -> None:
    """Computes ``--metrics`` of ``batches`` against ``reference``, prints the table and writes the JSON."""
    metrics = list(args.metrics)
    if reference.features is None:
        metrics = [m for m in metrics if m == "fd"] or ["fd"]  # mean/covariance only (e.g. pytorch-fid stats)
    metric = GenerativeMetrics(
        extractor,
        reference,
        metrics=metrics,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        seed=args.seed,
    ).to(device)
    for images in progress_bar(checked_batches(batches, "images"), total, "sample features", args.progress):
        metric.update(images.to(device))
    values = {name: float(value) for name, value in metric.compute().items()}
    counts = metric.sample_counts()
    record = {
        "metrics": values,
        **counts,
        "source": source,
        "extractor": extractor.describe(),
        "reference": {
            "key_hash": reference.key_hash,
            "key": reference.key,
            "path": str(reference_path) if reference_path else None,
        },
        "settings": {
            "kid_subsets": args.kid_subsets,
            "kid_subset_size": args.kid_subset_size,
            "pr_k": metric.pr_k,
            "dc_k": metric.dc_k,
            "is_splits": metric.is_splits,
        },
        "lit_gen_version": lit_gen.__version__,
    }
    out = Path(args.out) if args.out else default_out(args, extractor)
    write_json(out, record)
    print(format_table(values, counts))
    print(f"lit_gen: wrote {out}", file=sys.stderr)
