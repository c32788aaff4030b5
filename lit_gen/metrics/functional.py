"""The sample-quality formulas on feature matrices (no networks here).

- Fréchet distance (Heusel et al. 2017): torchmetrics' eigenvalue form, in float64.
- Kernel distance / KID (Bińkowski et al. 2018): torchmetrics' unbiased polynomial-kernel ``poly_mmd``,
  averaged over random subsets; subsets and standard deviation (ddof 0) as torch-fidelity's.
- Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over ``splits`` parts of the shuffled
  samples, as torch-fidelity's.
- Improved precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020): k-nearest
  neighbour balls around real (and, for recall, fake) features.

Features are (N, D) tensors; every function works on any device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
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
    mu1, sigma1, mu2, sigma2 = mu1.double(), sigma1.double(), mu2.double(), sigma2.double()
    # Tr((sigma1 sigma2)^½) is the sum of the square roots of the eigenvalues of sigma1 sigma2 (real and
    # non-negative for covariances, up to rounding); no matrix square root needed
    trace_sqrt = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum(dim=-1)
    value = (mu1 - mu2).square().sum(dim=-1) + (sigma1.trace() + sigma2.trace()) - 2 * trace_sqrt
    return value.clamp_min(0.0)


def kernel_distance(
    x: Tensor,
    y: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """KID: mean and (population, ddof 0) standard deviation over ``subsets`` random subsets (``subset_size``
    samples from each set, capped by the smaller set) of the unbiased MMD² with the kernel
    (gamma a·b + coef)^degree, gamma = 1/D by default. The subsets are drawn as torch-fidelity's
    ``kid_features_to_metric(x, y, rng_seed=seed)`` draws them (numpy ``RandomState(seed)``, from ``x`` then
    ``y``), so equal features and seed give torch-fidelity's numbers, and every DDP rank the same value."""
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"kernel distance needs at least 2 samples per set, got {x.shape[0]}/{y.shape[0]}")
    x, y = x.double(), y.double()
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        xs = x[torch.from_numpy(rng.choice(x.shape[0], size, replace=False)).to(x.device)]
        ys = y[torch.from_numpy(rng.choice(y.shape[0], size, replace=False)).to(y.device)]
        values.append(poly_mmd(xs, ys, degree=degree, gamma=gamma, coef=coef))
    values = torch.stack(values)
    return values.mean(), values.std(correction=0)


def inception_score(logits: Tensor, splits: int = 10, seed: int = 2020) -> tuple[Tensor, Tensor]:
    """Inception Score mean and (population, ddof 0) standard deviation over ``splits`` parts of the class
    logits, as torch-fidelity's ``isc_features_to_metric(logits, splits, shuffle=True, rng_seed=seed)``: rows
    shuffled by numpy ``RandomState(seed)``, part i = rows ``i*N//splits`` to ``(i+1)*N//splits``."""
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"the Inception Score needs at least splits={splits} samples, got {n}")
    order = torch.from_numpy(np.random.RandomState(seed).permutation(n)).to(logits.device)
    log_p = logits[order].double().log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = part.exp().mean(dim=0, keepdim=True).log()
        scores.append((part.exp() * (part - log_marginal)).sum(dim=1).mean().exp())
    scores = torch.stack(scores)
    return scores.mean(), scores.std(correction=0)


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
