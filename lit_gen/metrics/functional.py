"""The sample-quality formulas on feature matrices (no networks here).

- Fréchet distance (Heusel et al. 2017): torchmetrics' ``_compute_fid`` in float64.
- Kernel distance / KID (Bińkowski et al. 2018): torchmetrics' unbiased polynomial-kernel ``poly_mmd``,
  averaged over random subsets.
- Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over ``splits`` consecutive chunks.
- Improved precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020): k-nearest
  neighbour balls around real (and, for recall, fake) features.

Features are (N, D) tensors; every function works on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd


def mean_cov(feature_sum: Tensor, outer_sum: Tensor, n: int | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (float64) from running sums of features and of their outer products."""
    n = float(n)
    mean = feature_sum.double() / n
    cov = (outer_sum.double() - n * torch.outer(mean, mean)) / (n - 1.0)
    return mean, cov


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½) in float64 (torchmetrics' eigenvalue form,
    finite also for singular covariances, e.g. fewer samples than feature dimensions). Clamped at 0, as
    rounding can make a set's distance to itself a tiny negative number."""
    value = _compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double())
    return value.clamp_min(0.0)


def kernel_distance(
    real: Tensor,
    fake: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """KID: mean and standard deviation over ``subsets`` random subsets (``subset_size`` samples from each
    set, capped by the smaller set) of the unbiased MMD² with the kernel (gamma x·y + coef)^degree,
    gamma = 1/D by default. ``generator`` (CPU) fixes the subsets, so every DDP rank gets the same value."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(
            f"kernel distance needs at least 2 samples per set, got {real.shape[0]}/{fake.shape[0]}"
        )
    real, fake = real.double(), fake.double()
    values = []
    for _ in range(subsets):
        r = real[torch.randperm(real.shape[0], generator=generator)[:size].to(real.device)]
        f = fake[torch.randperm(fake.shape[0], generator=generator)[:size].to(fake.device)]
        values.append(poly_mmd(r, f, degree=degree, gamma=gamma, coef=coef))
    values = torch.stack(values)
    return values.mean(), values.std() if subsets > 1 else torch.zeros_like(values[0])


def inception_score(logits: Tensor, splits: int = 10) -> tuple[Tensor, Tensor]:
    """Inception Score mean and standard deviation over ``splits`` consecutive chunks of class logits."""
    scores = []
    for chunk in logits.double().chunk(splits, dim=0):
        log_p = chunk.log_softmax(dim=1)
        log_marginal = log_p.exp().mean(dim=0, keepdim=True).log()
        scores.append((log_p.exp() * (log_p - log_marginal)).sum(dim=1).mean().exp())
    scores = torch.stack(scores)
    return scores.mean(), scores.std() if len(scores) > 1 else torch.zeros_like(scores[0])


def _row_chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def knn_radii(features: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """Distance of each row to its k-th nearest other row (the radius of its k-NN ball)."""
    if features.shape[0] <= k:
        raise ValueError(f"k-NN radii need more than k={k} samples, got {features.shape[0]}")
    features = features.float()
    radii = []
    for start, end in _row_chunks(features.shape[0], chunk):
        distances = torch.cdist(features[start:end], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # the smallest distance is the row itself
    return torch.cat(radii)


def _ball_counts(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 4096) -> Tensor:
    """For each point, how many of the balls (centres, radii) contain it."""
    points, centres = points.float(), centres.float()
    counts = []
    for start, end in _row_chunks(points.shape[0], chunk):
        inside = torch.cdist(points[start:end], centres) <= radii.unsqueeze(0)
        counts.append(inside.sum(dim=1))
    return torch.cat(counts)


def precision_recall(
    real: Tensor, fake: Tensor, k: int = 3, real_radii: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Improved precision (share of fake samples inside some real k-NN ball) and recall (share of real samples
    inside some fake k-NN ball), Kynkäänniemi et al. 2019 (k = 3)."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    precision = (_ball_counts(fake, real, real_radii) > 0).double().mean()
    recall = (_ball_counts(real, fake, knn_radii(fake, k)) > 0).double().mean()
    return precision, recall


def density_coverage(
    real: Tensor, fake: Tensor, k: int = 5, real_radii: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Density (mean number of real k-NN balls holding a fake sample, divided by k; 1 in expectation for
    identical distributions) and coverage (share of real k-NN balls holding at least one fake sample),
    Naeem et al. 2020 (k = 5)."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    density = _ball_counts(fake, real, real_radii).double().sum() / (k * fake.shape[0])
    real_f, fake_f = real.float(), fake.float()
    nearest_fake = torch.cat(
        [torch.cdist(real_f[s:e], fake_f).min(dim=1).values for s, e in _row_chunks(real.shape[0], 4096)]
    )
    coverage = (nearest_fake < real_radii).double().mean()
    return density, coverage
