"""Callbacks: sample grids / scatter plots during training, toy mode metrics, checkpointing and the progress bar."""

from lit_gen.callbacks.evaluation import SampleQuality
from lit_gen.callbacks.modes import ModeMetrics
from lit_gen.callbacks.progress import ProgressBar
from lit_gen.callbacks.reliability import Checkpoint, NonFiniteGuard
from lit_gen.callbacks.samples import SampleGrid, batches_done
from lit_gen.callbacks.slurm import SLURMRequeue

__all__ = [
    "Checkpoint",
    "ModeMetrics",
    "NonFiniteGuard",
    "ProgressBar",
    "SampleGrid",
    "SampleQuality",
    "SLURMRequeue",
    "batches_done",
]
