"""Loading lit_gen checkpoints safely (``weights_only``: no code from the file is executed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import instantiate_module

from lit_gen.errors import LitGenError


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; a missing, truncated or foreign file raises a
    one-line ``LitGenError`` naming ``key`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise LitGenError(f"{key}: checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle: all mean "not a usable checkpoint"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LitGenError(f"{key}: '{path}' is not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitGenError(f"{key}: '{path}' is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def load_model(path: str | Path, key: str = "ckpt_path") -> tuple[LightningModule, dict[str, Any]]:
    """Rebuilds the model a checkpoint was trained with (from the hyper-parameters the CLI stored in it) and
    loads its weights. Returns the model in eval mode and the checkpoint dict."""
    checkpoint = read_checkpoint(path, key)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if "_class_path" not in hparams:
        raise LitGenError(
            f"{key}: '{path}' holds no model class (was it written by `python -m lit_gen fit`?)"
        )
    model = instantiate_module(LightningModule, hparams)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def load_datamodule(checkpoint: dict[str, Any]):
    """The datamodule a checkpoint was trained with, or None when it cannot be rebuilt (e.g. data moved)."""
    from lightning.pytorch import LightningDataModule

    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if "_class_path" not in hparams:
        return None
    try:
        return instantiate_module(LightningDataModule, hparams)
    except Exception:
        return None
