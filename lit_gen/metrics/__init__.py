"""torchmetrics-style metrics (``update`` / ``compute``, DDP-synchronised states)."""

from lit_gen.metrics.modes import ModeCoverage

__all__ = ["ModeCoverage"]
