"""torchmetrics-style metrics (``update`` / ``compute``, DDP-synchronised states) and their feature extractors."""

from lit_gen.metrics.features import (
    FeatureExtractor,
    InceptionV3Features,
    ModuleFeatures,
    RandomConvFeatures,
)
from lit_gen.metrics.generative import GenerativeMetrics
from lit_gen.metrics.modes import ModeCoverage
from lit_gen.metrics.reference import ReferenceStats, compute_reference, reference_from_datamodule

__all__ = [
    "FeatureExtractor",
    "GenerativeMetrics",
    "InceptionV3Features",
    "ModeCoverage",
    "ModuleFeatures",
    "RandomConvFeatures",
    "ReferenceStats",
    "compute_reference",
    "reference_from_datamodule",
]
