"""Pins the behaviour of every private Lightning / jsonargparse name ``lit_gen/_lightning.py`` uses: a release
that changes one fails here, by name, instead of in a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import Logger

from lit_gen._lightning import ConfigOverCheckpointCLI, parse_without_validation

# --- cli -------------------------------------------------------------------------------------------------------


class Width(LightningModule):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.width = width


class _Parsed(Exception):
    pass


def parsed_width(cli_class: type[LightningCLI], args: list[str]) -> int:
    """``model.width`` as ``cli_class`` has it after parsing (and after what LightningCLI does next)."""

    class StopBeforeInstantiating(cli_class):
        def before_instantiate_classes(self) -> None:
            raise _Parsed(self.config.fit.model.width)

    with pytest.raises(_Parsed) as parsed:
        StopBeforeInstantiating(Width, args=args, save_config_callback=None)
    return parsed.value.args[0]


def test_lightningcli_replaces_the_model_config_by_the_checkpoints_hparams_unless_told_not_to(tmp_path: Path):
    """``_parse_ckpt_path``: LightningCLI re-parses ``model`` from the hyper-parameters in ``--ckpt_path``
    between parsing and ``before_instantiate_classes``; ``ConfigOverCheckpointCLI`` keeps the command line's."""
    ckpt = tmp_path / "width7.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"width": 7}}, ckpt)
    args = ["fit", "--model.width", "3", "--ckpt_path", str(ckpt)]
    assert parsed_width(LightningCLI, args) == 7
    assert parsed_width(ConfigOverCheckpointCLI, args) == 3


def test_parse_args_can_leave_a_required_init_arg_unset_until_validated():
    """``_skip_validation``: a logger given without its required ``save_dir`` parses; ``validate`` then names
    it. The CLI fills in the run directory in between."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--logger", type=Logger)
    with pytest.raises(ArgumentError, match="save_dir"):
        parser.parse_args(["--logger=CSVLogger"])
    config = parse_without_validation(parser, ["--logger=CSVLogger"])
    assert config.logger.class_path == "lightning.pytorch.loggers.CSVLogger"
    assert config.logger.init_args.get("save_dir") is None
    with pytest.raises(TypeError, match="save_dir"):  # the CLI turns this into its one-line error
        parser.validate(config)
    config.logger.init_args.save_dir = "runs/x"
    parser.validate(config)
