"""Reading and writing lit_gen checkpoints safely.

- Loading never executes code from the file: every load is ``torch.load(..., weights_only=True)`` (here, in
  ``SafeCheckpointIO`` which the trainer uses for ``--ckpt_path``, and in ``lit_gen.cli`` for the checkpoint's
  hyper-parameters). A missing, truncated, foreign or code-carrying file is a one-line ``LitGenError``.
- Saving is atomic: the checkpoint is written to a temporary file in the target's folder, flushed to disk
  and renamed over the target, so a crash mid-write leaves the previous ``last.ckpt`` intact.
- ``rng_states`` / ``set_rng_states``: the global random number generators (torch CPU and CUDA, NumPy,
  Python) as plain tensors and numbers, loadable with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fsspec.utils import get_protocol
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule

from lit_gen._lightning import checkpoint_batches_done, instantiate_saved, saved_class_path
from lit_gen.errors import LitGenError


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; a missing, truncated, foreign or code-carrying
    file raises a one-line ``LitGenError`` naming ``key`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise LitGenError(f"{key}: checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle: all mean "not a usable checkpoint"
        raise refused_load(key, path, err) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitGenError(f"{key}: '{path}' is not a lit_gen checkpoint (it holds no state_dict)")
    return checkpoint


def refused_load(
    key: str, path: str | Path, err: Exception, what: str = "a lit_gen checkpoint"
) -> LitGenError:
    """The one-line error for a file ``torch.load(..., weights_only=True)`` refused: it carries code (a pickled
    function or class outside torch's allow-list, which only ``weights_only=False`` would run), or it is not a
    file ``torch.save`` wrote (truncated, corrupt, something else). Never suggests ``weights_only=False``."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if found:
        return LitGenError(
            f"{key}: '{path}' is not {what}: it carries code ({found.group(1)}), so it was not loaded"
        )
    return LitGenError(
        f"{key}: '{path}' is not {what} (truncated, corrupt or not written by torch.save); it was not loaded"
    )


def batches_trained(checkpoint: dict[str, Any]) -> int | None:
    """Training batches a checkpoint was saved after (its fit loop's count); None when it holds no fit loop."""
    try:
        return checkpoint_batches_done(checkpoint)
    except (KeyError, TypeError):
        return None


def training_progress(path: str | Path) -> tuple[int, int] | None:
    """(training batches, optimizer steps) a checkpoint was saved after, read without loading its tensors
    (memory-mapped); None when ``path`` is not a readable Lightning checkpoint."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        batches = batches_trained(checkpoint)
        return None if batches is None else (batches, int(checkpoint["global_step"]))
    except Exception:  # truncated, foreign, or saved outside fit: not a point to resume from
        return None


def newest_checkpoint(run_dir: str | Path, checkpoint_dir: str | Path) -> Path | None:
    """The run's checkpoint with the most training progress: ``last*.ckpt`` in ``checkpoint_dir`` or
    Lightning's ``hpc_ckpt_N.ckpt`` in ``run_dir`` (saved on SLURM's requeue signal). On a tie the newest
    ``hpc_ckpt_N.ckpt`` wins (Lightning's restart point, saved at the end of a batch); None when there is
    none."""
    hpc = [p for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if p.stem.rsplit("_", 1)[-1].isdigit()]
    hpc.sort(key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    candidates = [*Path(checkpoint_dir).glob("last*.ckpt"), *hpc]
    ranked = []
    for order, path in enumerate(candidates):
        progress = training_progress(path)
        if progress is not None:
            ranked.append((progress, order, path))
    return max(ranked)[2] if ranked else None


#: classes that moved to another module since checkpoints stored their class paths (old path -> new path)
MOVED_CLASS_PATHS = {
    "lit_gen.models.vae.Bernoulli": "lit_gen.likelihoods.Bernoulli",
    "lit_gen.models.vae.Gaussian": "lit_gen.likelihoods.Gaussian",
    "lit_gen.models.vae.DiscretizedLogistic": "lit_gen.likelihoods.DiscretizedLogistic",
    "lit_gen.models.vae.BurdaLR": "lit_gen.optim.BurdaLR",
    "lit_gen.models.autoregressive.WarmupCosineLR": "lit_gen.optim.WarmupCosineLR",
}


def upgrade_class_paths(config: Any) -> Any:
    """``config`` (stored hyper-parameters: dicts, lists and plain values) with every class path that moved
    replaced by its new one (``MOVED_CLASS_PATHS``), so that older checkpoints still rebuild their model."""
    if isinstance(config, str):
        return MOVED_CLASS_PATHS.get(config, config)
    if isinstance(config, dict):
        return {key: upgrade_class_paths(value) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return type(config)(upgrade_class_paths(value) for value in config)
    return config


def load_model(path: str | Path, key: str = "ckpt_path") -> tuple[LightningModule, dict[str, Any]]:
    """Rebuilds the model a checkpoint was trained with (from the hyper-parameters the CLI stored in it) and
    loads its weights. Returns the model in eval mode and the checkpoint dict."""
    checkpoint = read_checkpoint(path, key)
    hparams = upgrade_class_paths(dict(checkpoint.get("hyper_parameters") or {}))
    if saved_class_path(hparams) is None:
        raise LitGenError(
            f"{key}: '{path}' holds no model class (was it written by `python -m lit_gen fit`?)"
        )
    model = instantiate_saved(LightningModule, hparams)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def load_datamodule(checkpoint: dict[str, Any]):
    """The datamodule a checkpoint was trained with, or None when it cannot be rebuilt (e.g. data moved)."""
    from lightning.pytorch import LightningDataModule

    hparams = upgrade_class_paths(dict(checkpoint.get("datamodule_hyper_parameters") or {}))
    if saved_class_path(hparams) is None:
        return None
    try:
        return instantiate_saved(LightningDataModule, hparams)
    except Exception:
        return None


# --- atomic, code-free checkpoint IO ---------------------------------------------------------------------------


def new_temp_file(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new empty file ``.{name}.{random}{suffix}`` next to ``path``, open for writing (fd, path). Unlike
    ``tempfile.mkstemp``'s (mode 0600) it gets the mode every new file gets, 0666 less the umask, so the file
    renamed over ``path`` can be shared like the user's other files."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename over ``path`` (atomic on POSIX
    file systems): readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def is_local_path(path: str | Path) -> bool:
    """Whether ``path`` is on the local file system (a plain path or ``file://``), not ``s3://`` etc."""
    return get_protocol(str(path)) == "file"


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local writes and ``weights_only`` loading.

    Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system temp
    folder, so on clusters (``/tmp`` on another file system than the run) the final step is a copy into
    ``last.ckpt`` that a crash can cut short. Remote paths (``s3://`` ...) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not is_local_path(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not is_local_path(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(path)


# --- global random number generators -------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """The global RNG states: torch CPU, the current CUDA device (if initialised), NumPy's legacy global
    generator and Python's ``random``, as tensors / ints / tuples (no NumPy objects: ``weights_only`` loads
    them)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only (under DDP each rank has its own; get_rng_state_all would create a
        # context on every visible GPU in every process)
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restores what ``rng_states`` returned."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
