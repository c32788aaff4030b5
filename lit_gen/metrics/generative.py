"""``GenerativeMetrics``: FID, KID, Inception Score, precision/recall and density/coverage from one feature
pass per generated image, against cached reference statistics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lit_gen.errors import LitGenError
from lit_gen.metrics.features import FeatureExtractor, as_extractor
from lit_gen.metrics.functional import (
    density_coverage,
    frechet_distance,
    inception_score,
    kernel_distance,
    mean_cov,
    precision_recall,
)
from lit_gen.metrics.reference import ReferenceStats

#: the metric groups: Fréchet distance, kernel distance, Inception Score, precision/recall, density/coverage
METRICS = ("fd", "kd", "is", "pr", "dc")


def metric_names(extractor: FeatureExtractor) -> dict[str, str]:
    """Output names. With the standard FID Inception weights they are the literature's (``fid``, ``kid``,
    ``is``, ``precision``...); with any other extractor or weights they never say FID/KID/IS: ``fd_<name>``,
    ``kd_<name>``, ``is_<name>``, ``precision_<name>``..."""
    if extractor.fid_compatible:
        names = ["fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "density", "coverage"]
        return dict(
            zip(["fd", "kd", "kd_std", "is", "is_std", "precision", "recall", "density", "coverage"], names)
        )
    suffix = extractor.name
    return {
        "fd": f"fd_{suffix}",
        "kd": f"kd_{suffix}",
        "kd_std": f"kd_{suffix}_std",
        "is": f"is_{suffix}",
        "is_std": f"is_{suffix}_std",
        "precision": f"precision_{suffix}",
        "recall": f"recall_{suffix}",
        "density": f"density_{suffix}",
        "coverage": f"coverage_{suffix}",
    }


class GenerativeMetrics(Metric):
    """Sample-quality metrics of generated images against a reference.

    ``update(images)`` runs the extractor once per image and accumulates the states every configured metric
    needs; ``compute()`` returns a dict of scalars (names from ``metric_names``). States are DDP-synchronised
    by torchmetrics: float64 sums for the Fréchet distance (``dist_reduce_fx="sum"``), concatenated features
    and logits for the others (``"cat"``), so each rank updates with its own samples and every rank computes
    the same values.

    Args:
        extractor: a ``FeatureExtractor`` or any ``nn.Module`` mapping images to (N, D) features.
        reference: real statistics (``ReferenceStats``); may be set later with ``set_reference``.
        metrics: subset of ``("fd", "kd", "is", "pr", "dc")``; ``is`` needs an extractor with class logits
            (``has_logits``: Inception) and is skipped otherwise.
        kid_subsets, kid_subset_size: KID averaged over this many subsets of this size (100 x 1000 in
            Bińkowski et al. 2018; the size is capped by the sample counts).
        is_splits: Inception Score splits (10 in Salimans et al. 2016).
        pr_k: k of improved precision/recall (3 in Kynkäänniemi et al. 2019).
        dc_k: k of density/coverage (5 in Naeem et al. 2020).
        seed: seed of the KID subsets and of the Inception Score's shuffle (torch-fidelity's ``rng_seed``;
            the same on every rank).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        extractor: nn.Module,
        reference: ReferenceStats | None = None,
        metrics: Sequence[str] = METRICS,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        pr_k: int = 3,
        dc_k: int = 5,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise LitGenError(f"metrics: unknown {unknown}; choose from {list(METRICS)}")
        self.extractor = as_extractor(extractor)
        self.metrics = tuple(m for m in METRICS if m in metrics)
        if "is" in self.metrics and not self.extractor.has_logits:
            self.metrics = tuple(m for m in self.metrics if m != "is")  # no class logits to score
        self.kid_subsets, self.kid_subset_size, self.is_splits = kid_subsets, kid_subset_size, is_splits
        self.pr_k, self.dc_k, self.seed = pr_k, dc_k, seed
        self.reference = reference
        self.names = metric_names(self.extractor)
        self.add_state("fake_n", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self._dim: int | None = None
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_logits", default=[], dist_reduce_fx="cat")
        if getattr(self.extractor, "num_features", None):
            self._ensure_sums(int(self.extractor.num_features), torch.device("cpu"))

    def set_reference(self, reference: ReferenceStats) -> None:
        self.reference = reference

    def _ensure_sums(self, dim: int, device: torch.device) -> None:
        if self._dim is None:
            self._dim = dim
            self.add_state("fake_sum", default=torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                "fake_outer", default=torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.fake_sum, self.fake_outer = self.fake_sum.to(device), self.fake_outer.to(device)

    @torch.no_grad()
    def update(
        self, images: Tensor | None = None, features: Tensor | None = None, logits: Tensor | None = None
    ) -> None:
        """Adds generated images (N, C, H, W) in [0, 1], or precomputed ``features`` (N, D) (and class
        ``logits`` for the Inception Score)."""
        if images is not None:
            features, logits = self.extractor.extract(images.to(self.device))
        if features is None:
            raise ValueError("GenerativeMetrics.update needs images or features")
        self._ensure_sums(features.shape[1], features.device)
        f64 = features.double()
        self.fake_sum += f64.sum(0)
        self.fake_outer += f64.T @ f64
        self.fake_n += features.shape[0]
        if {"kd", "pr", "dc"} & set(self.metrics):
            self.fake_features.append(features.float())
        if "is" in self.metrics and logits is not None:
            self.fake_logits.append(logits.float())

    def update_features(self, features: Tensor, logits: Tensor | None = None) -> None:
        """Adds precomputed features (N, D) (and class logits for the Inception Score)."""
        self.update(features=features, logits=logits)

    def compute(self) -> dict[str, Tensor]:
        if self.reference is None:
            raise LitGenError("reference: GenerativeMetrics has no reference statistics (set_reference)")
        if int(self.fake_n) < 2:
            raise LitGenError(f"num_samples: need at least 2 generated samples, got {int(self.fake_n)}")
        ref, names, out = self.reference, self.names, {}
        self._synced_num_fake = int(self.fake_n)  # compute() sees the states summed over ranks
        k_max = max([self.pr_k] * ("pr" in self.metrics) + [self.dc_k] * ("dc" in self.metrics) + [0])
        if k_max and int(self.fake_n) <= k_max:
            raise LitGenError(
                f"num_samples: k-NN metrics (pr/dc) need more than {k_max} samples, got {int(self.fake_n)}"
            )
        if "is" in self.metrics and self.fake_logits and int(self.fake_n) < self.is_splits:
            raise LitGenError(
                f"num_samples: the Inception Score needs at least is_splits={self.is_splits} samples, "
                f"got {int(self.fake_n)}"
            )
        device = self.fake_sum.device
        if "fd" in self.metrics:
            mean, cov = mean_cov(self.fake_sum, self.fake_outer, self.fake_n)
            out[names["fd"]] = frechet_distance(ref.mean.to(device), ref.cov.to(device), mean, cov)
        needs_features = {"kd", "pr", "dc"} & set(self.metrics)
        fake = dim_zero_cat(self.fake_features) if needs_features else None
        real = ref.features.to(device) if needs_features and ref.features is not None else None
        if needs_features and real is None:
            raise LitGenError("reference: statistics without features support FID only (metrics: [fd])")
        if "kd" in self.metrics:
            # generated first, as torch-fidelity's input1: equal features and seed give its numbers
            kid, kid_std = kernel_distance(fake, real, self.kid_subsets, self.kid_subset_size, seed=self.seed)
            out[names["kd"]], out[names["kd_std"]] = kid, kid_std
        if "is" in self.metrics and self.fake_logits:
            out[names["is"]], out[names["is_std"]] = inception_score(
                dim_zero_cat(self.fake_logits), self.is_splits, seed=self.seed
            )
        if "pr" in self.metrics:
            p, r = precision_recall(real, fake, self.pr_k, ref.nn_radii(self.pr_k).to(device))
            out[names["precision"]], out[names["recall"]] = p, r
        if "dc" in self.metrics:
            d, c = density_coverage(real, fake, self.dc_k, ref.nn_radii(self.dc_k).to(device))
            out[names["density"]], out[names["coverage"]] = d, c
        return {k: v.float() for k, v in out.items()}

    def reset(self) -> None:
        super().reset()
        self._synced_num_fake = None

    def sample_counts(self) -> dict[str, int]:
        """Generated and reference sample counts behind the numbers (FID depends strongly on them); after
        ``compute`` the generated count is the total over all DDP ranks."""
        num_fake = getattr(self, "_synced_num_fake", None)
        num_fake = int(self.fake_n) if num_fake is None else num_fake
        ref = self.reference
        return {
            "num_fake": num_fake,
            "num_real": int(ref.num_samples) if ref is not None else 0,
            "num_real_features": int(len(ref.features))
            if ref is not None and ref.features is not None
            else 0,
        }
