"""In-training sample quality: FID (or ``fd_random`` etc.) of generated samples every N training batches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from lit_gen._lightning import batches_done
from lit_gen.errors import LitGenError
from lit_gen.loggers import define_wandb_summaries
from lit_gen.metrics.features import FeatureExtractor, InceptionV3Features, as_extractor
from lit_gen.metrics.generative import METRICS, GenerativeMetrics, metric_names
from lit_gen.metrics.reference import ReferenceStats, reference_from_datamodule
from lit_gen.utils import derived_seed


def _goal(group: str) -> str:
    """How W&B summarises a metric group (see ``lit_gen.loggers.SUMMARIES``): the best (lowest FD/KD, highest
    of the others) and last value; a standard deviation only by its last value."""
    if group.endswith("_std"):
        return "last"
    return "min" if group in ("fd", "kd") else "max"


class SampleQuality(Callback):
    """Every ``every_n_batches`` training batches (and at the end of fit) generates ``num_samples`` images with
    the model's ``generate`` (GAN: the EMA generator), scores them against the reference statistics of the
    datamodule's ``reference_split`` (computed once, cached on disk) and logs ``val/fid``, ``val/kid``... —
    or ``val/fd_random``... with another extractor (``val/fd_inception_<sha256 prefix>``... with Inception
    weights other than the standard file). Works for any ``GenerativeModule`` whose ``generate`` returns images.

    Under DDP each rank generates ``ceil(num_samples / world_size)`` samples with its own noise and every rank
    computes the (synchronised) metrics. The extractor lives in this callback, never in the LightningModule,
    so no metric network enters the checkpoints. Each evaluation is also appended, with its sample counts,
    extractor and reference key, to ``<run dir>/eval/metrics.jsonl``. Under ``WandbLogger`` the run summary
    keeps the best value (min of FID/KID, max of the others) and the last one (the last only of the stds).

    Args:
        extractor: feature extractor (``class_path``); default ``lit_gen.metrics.InceptionV3Features``.
        every_n_batches: how often, in training batches (0: only at the end of fit).
        num_samples: generated samples per evaluation, over all ranks (10k is the usual in-training FID;
            report 50k for papers).
        metrics: subset of ``fd`` (Fréchet distance / FID), ``kd`` (KID), ``is`` (Inception Score),
            ``pr`` (precision/recall), ``dc`` (density/coverage).
        reference_split: ``train`` or ``val`` split of the datamodule as the real data.
        reference_stats: a statistics file (``evaluate --stats_only`` or pytorch-fid ``.npz``) instead.
        reference_samples: use at most this many real images (default: all).
        max_reference_features: real features kept for KID / PR / DC.
        cache_dir: reference statistics cache (default ``$LIT_GEN_STATS_DIR`` or ``~/.cache/lit_gen/stats``).
        use_cache: read and write the cache.
        batch_size: samples generated / images embedded per forward pass.
        kid_subsets, kid_subset_size: KID subsets.
        seed: seed of the generated noise (fixed across evaluations, distinct per rank).
        at_train_end: also evaluate when fit ends.
    """

    def __init__(
        self,
        extractor: nn.Module | None = None,
        every_n_batches: int = 5000,
        num_samples: int = 10_000,
        metrics: list[str] | None = None,
        reference_split: str = "train",
        reference_stats: str | None = None,
        reference_samples: int | None = None,
        max_reference_features: int = 10_000,
        cache_dir: str | None = None,
        use_cache: bool = True,
        batch_size: int = 250,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        at_train_end: bool = True,
    ) -> None:
        metrics = list(METRICS) if metrics is None else list(metrics)
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise LitGenError(
                f"callbacks.SampleQuality.metrics: unknown {unknown}; choose from {list(METRICS)}"
            )
        if num_samples < 2:
            raise LitGenError(f"callbacks.SampleQuality.num_samples must be >= 2, got {num_samples}")
        if reference_split not in ("train", "val"):
            raise LitGenError(
                f"callbacks.SampleQuality.reference_split must be train or val, got '{reference_split}'"
            )
        self.extractor: FeatureExtractor | None = as_extractor(extractor) if extractor is not None else None
        self.every_n_batches, self.num_samples, self.metrics = every_n_batches, num_samples, metrics
        self.reference_split, self.reference_stats = reference_split, reference_stats
        self.reference_samples, self.max_reference_features = reference_samples, max_reference_features
        self.cache_dir, self.use_cache, self.batch_size = cache_dir, use_cache, batch_size
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        self.at_train_end = at_train_end
        self.reference: ReferenceStats | None = None
        self.reference_path: Path | None = None
        self.last: dict[str, float] = {}
        self._last_evaluated = -1

    # --- set-up ------------------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run:
            return
        if self.extractor is None:  # rank 0 downloads the weights (when online) before the others look
            if trainer.is_global_zero:
                self.extractor = InceptionV3Features()
            trainer.strategy.barrier("lit_gen.SampleQuality.extractor")
            if self.extractor is None:
                self.extractor = InceptionV3Features()
        goals = {f"val/{name}": _goal(group) for group, name in metric_names(self.extractor).items()}
        define_wandb_summaries(trainer, {**goals, "val/nfe": "last"})

    def _reference(self, trainer: Trainer, device: torch.device) -> ReferenceStats:
        if self.reference is not None:
            return self.reference
        if self.reference_stats:
            self.reference = ReferenceStats.load(
                self.reference_stats, key="callbacks.SampleQuality.reference_stats"
            )
            self.reference_path = Path(self.reference_stats)
            return self.reference
        if trainer.datamodule is None:
            raise LitGenError(
                "callbacks.SampleQuality: needs a datamodule or reference_stats for the real data"
            )

        def compute() -> tuple[ReferenceStats, Path | None, bool]:
            return reference_from_datamodule(
                trainer.datamodule,
                self.reference_split,
                self.extractor,
                cache_dir=self.cache_dir,
                use_cache=self.use_cache,
                max_samples=self.reference_samples,
                max_features=self.max_reference_features,
                batch_size=self.batch_size,
                device=device,
            )

        if trainer.world_size > 1 and self.use_cache:  # rank 0 fills the cache, the others read it
            if trainer.is_global_zero:
                self.reference, self.reference_path, _ = compute()
            trainer.strategy.barrier("lit_gen.SampleQuality.reference")
            if not trainer.is_global_zero:
                self.reference, self.reference_path, _ = compute()
        else:
            self.reference, self.reference_path, _ = compute()
        return self.reference

    # --- evaluation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Generates this rank's share of samples, computes the metrics (synchronised over ranks) and returns
        them as ``{"val/<name>": value}``."""
        device = pl_module.device
        self.extractor.to(device)
        started = time.perf_counter()
        metric = GenerativeMetrics(
            self.extractor,
            self._reference(trainer, device),
            metrics=self.metrics,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            seed=self.seed,
        ).to(device)
        per_rank = -(-self.num_samples // trainer.world_size)
        rng = torch.Generator().manual_seed(derived_seed(self.seed, trainer.global_rank))
        for start in range(0, per_rank, self.batch_size):
            samples = pl_module.generate(min(self.batch_size, per_rank - start), rng=rng)
            if samples.dim() != 4 or not samples.is_floating_point():
                raise LitGenError(
                    f"callbacks.SampleQuality: {type(pl_module).__name__}.generate returns "
                    f"{tuple(samples.shape)} {samples.dtype}, not images (N, C, H, W) in [0, 1]"
                )
            metric.update(samples)
        values = {f"val/{name}": float(value) for name, value in metric.compute().items()}
        if hasattr(pl_module, "last_nfe"):  # diffusion: network evaluations per sample
            values["val/nfe"] = float(pl_module.last_nfe)
        counts = metric.sample_counts()
        self.last = values
        if trainer.is_global_zero:
            self._append_record(trainer, values, counts, time.perf_counter() - started)
        return values

    def _append_record(self, trainer: Trainer, values: dict, counts: dict, seconds: float) -> None:
        path = Path(trainer.default_root_dir) / "eval" / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "batches": batches_done(trainer),
            "global_step": trainer.global_step,
            "metrics": values,
            **counts,
            "extractor": self.extractor.describe(),
            "reference": {
                "key_hash": self.reference.key_hash,
                "key": self.reference.key,
                "path": str(self.reference_path) if self.reference_path else None,
            },
            "seconds": round(seconds, 3),
        }
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = batches_done(trainer)
        if trainer.fast_dev_run or batches == self._last_evaluated or self.extractor is None:
            return
        self._last_evaluated = batches
        values = self.evaluate(trainer, pl_module)
        # lets ModelCheckpoint(monitor="val/fid") and early stopping use the values
        for name, value in values.items():
            trainer.callback_metrics[name] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_batches > 0 and batches_done(trainer) % self.every_n_batches == 0:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_train_end:
            self._run(trainer, pl_module)
