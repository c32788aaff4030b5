"""Every private Lightning, jsonargparse, torchmetrics and torch name lit_gen uses, and nowhere else.

Each access is a small function (or subclass) here with a one-line reason; ``tests/test_lightning_internals.py``
pins the behaviour each relies on, so a release that changes one fails a named test, not a user's run, and
checks that no other module touches a private name.
"""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningCLI

# --- cli -------------------------------------------------------------------------------------------------------


class ConfigOverCheckpointCLI(LightningCLI):
    """LightningCLI whose model config is not replaced by the hyper-parameters stored in ``--ckpt_path``."""

    def _parse_ckpt_path(self) -> None:
        """LightningCLI re-parses ``model`` from the checkpoint's hyper-parameters right after parsing, with no
        public switch; lit_gen's run config and command line decide the model (the CLI compares the two)."""


def parse_without_validation(parser: ArgumentParser, args: list[str] | None) -> Namespace:
    """``parser.parse_args`` without the final validation (jsonargparse's private ``_skip_validation``): a
    logger given without its required ``save_dir`` gets the run directory before the config is validated."""
    return parser.parse_args(args, _skip_validation=True)
