"""The package's layering, and checkpoints that name classes at the module paths they had before they moved."""

from __future__ import annotations

import ast
import copy
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import instantiate_module

from lit_gen.checkpoints import MOVED_CLASS_PATHS, load_model
from lit_gen.likelihoods import DiscretizedLogistic
from lit_gen.optim import BurdaLR, WarmupCosineLR

PACKAGE = Path(__file__).resolve().parents[1] / "lit_gen"


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions (relative imports resolved)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = package[: len(package) - node.level + 1] if node.level else ()
            base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_module_of_the_data_layer_imports_models():
    files = sorted((PACKAGE / "data").glob("*.py"))
    assert files
    for path in files:
        upward = sorted(
            name for name in imported_modules(path) if name.split(".")[:2] == ["lit_gen", "models"]
        )
        assert not upward, f"{path.name} imports {upward}"


def test_importing_the_data_does_not_import_the_models():
    code = "import sys, lit_gen.data; print(sorted(m for m in sys.modules if m.startswith('lit_gen.models')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_every_moved_class_path_names_an_object_at_its_new_path():
    for old, new in MOVED_CLASS_PATHS.items():
        module, name = new.rsplit(".", 1)
        assert old.rsplit(".", 1)[1] == name
        assert getattr(importlib.import_module(module), name).__name__ == name


VAE_HPARAMS = {
    "_class_path": "lit_gen.models.VAE",
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
    "encoder": {
        "class_path": "lit_gen.nets.MLPEncoder",
        "init_args": {"image_shape": [1, 4, 4], "hidden": [8], "latent_dim": 2},
    },
    "decoder": {
        "class_path": "lit_gen.nets.MLPDecoder",
        "init_args": {"image_shape": [1, 4, 4], "hidden": [8], "latent_dim": 2, "params_per_pixel": 2},
    },
    "likelihood": {"class_path": "lit_gen.likelihoods.DiscretizedLogistic", "init_args": {"bins": 16}},
    "lr_scheduler": {"class_path": "lit_gen.optim.BurdaLR", "init_args": {"num_stages": 3}},
}
GPT_HPARAMS = {
    "_class_path": "lit_gen.models.Autoregressive",
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
    "network": {
        "class_path": "lit_gen.nets.GPT",
        "init_args": {"vocab_size": 5, "block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 8},
    },
    "lr_scheduler": {
        "class_path": "lit_gen.optim.WarmupCosineLR",
        "init_args": {"warmup_steps": 2, "decay_steps": 10},
    },
}


@pytest.mark.parametrize(
    ("hparams", "old_paths", "scheduler"),
    [
        (
            VAE_HPARAMS,
            {
                "likelihood": "lit_gen.models.vae.DiscretizedLogistic",
                "lr_scheduler": "lit_gen.models.vae.BurdaLR",
            },
            BurdaLR,
        ),
        (GPT_HPARAMS, {"lr_scheduler": "lit_gen.models.autoregressive.WarmupCosineLR"}, WarmupCosineLR),
    ],
    ids=["vae", "gpt"],
)
def test_a_checkpoint_naming_the_old_class_paths_still_loads(tmp_path, hparams, old_paths, scheduler):
    torch.manual_seed(0)
    model = instantiate_module(LightningModule, {k: v for k, v in hparams.items() if k != "_instantiator"})
    stored = copy.deepcopy(hparams)
    for key, path in old_paths.items():
        stored[key]["class_path"] = path
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": stored}, tmp_path / "old.ckpt")

    loaded, _ = load_model(tmp_path / "old.ckpt")

    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    config = loaded.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], scheduler)
    if "likelihood" in old_paths:
        assert isinstance(loaded.likelihood, DiscretizedLogistic) and loaded.likelihood.bins == 16


def test_every_module_imports_first():
    """Each module of the package imports in a fresh interpreter as the first lit_gen module (a circular import
    only shows when its cycle is entered from a particular module)."""
    modules = sorted(
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
        if path.name != "__main__.py"
    )
    script = (
        "import importlib, sys, torch, lightning.pytorch\n"
        "failed = []\n"
        f"for name in {modules!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'lit_gen' or m.startswith('lit_gen.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {error}')\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout
