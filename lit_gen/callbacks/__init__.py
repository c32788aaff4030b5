"""Callbacks: sample grids / scatter plots during training, toy mode metrics."""

from lit_gen.callbacks.modes import ModeMetrics
from lit_gen.callbacks.samples import SampleGrid, batches_done

__all__ = ["ModeMetrics", "SampleGrid", "batches_done"]
