"""W&B sweeps: the argument list a ``wandb agent`` builds reaches the model; unknown keys are reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from helpers.paths import ROOT

from lit_gen.cli import LitGenCLI
from lit_gen.losses import Hinge

SWEEPS = ROOT / "experiments" / "sweeps"


def _load_check():
    spec = importlib.util.spec_from_file_location("sweep_check", SWEEPS / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check()


class _Built(Exception):
    pass


class BuildOnly(LitGenCLI):
    """The CLI up to instantiation (model, data, trainer): it stops before running ``fit``."""

    def before_fit(self) -> None:
        raise _Built(self)


def test_agent_arguments_arrive_in_the_model(tmp_path, monkeypatch):
    sweep = check.load_sweep(SWEEPS / "gan_toy_grid.yaml")
    # one point of the sweep, plus the value kinds an agent formats specially: null, bool, list
    params = {
        "model.loss": "lit_gen.losses.Hinge",
        "model.generator_optimizer.init_args.lr": 0.001,
        "model.discriminator_optimizer.init_args.lr": 0.0002,
        "model.ema_decay": None,
        "trainer.enable_model_summary": False,
        "model.generator.init_args.hidden": [64, 32],
    }
    command = check.agent_command(sweep, params)
    assert command[:6] == ["python", "-m", "lit_gen", "fit", "--config", "configs/toy_grid.yaml"]
    # W&B's own formatting: --key=value, Python's str() of the value
    assert "--model.ema_decay=None" in command and "--trainer.enable_model_summary=False" in command
    assert "--model.generator.init_args.hidden=[64, 32]" in command
    monkeypatch.chdir(ROOT)  # agents run from the repository root
    with pytest.raises(_Built) as built:
        BuildOnly(args=[*check.cli_args(Path("sweep"), command), f"--run.root={tmp_path}"])
    cli = built.value.args[0]

    model = cli.model
    assert isinstance(model.loss, Hinge)
    opt_g, opt_d = model.configure_optimizers()[0]
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.001)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.0002)
    assert model.generator_ema is None
    assert [m.out_features for m in model.generator.modules() if isinstance(m, torch.nn.Linear)] == [
        64,
        32,
        2,
    ]
    assert cli.config.fit.trainer.enable_model_summary is False
    # the hyper-parameters stored in checkpoints hold the swept values too
    assert model.hparams["generator_optimizer"]["init_args"]["lr"] == pytest.approx(0.001)
    assert model.hparams["loss"]["class_path"] == "lit_gen.losses.Hinge"


def test_shipped_sweeps_parse(capsys):
    sweeps = sorted(SWEEPS.glob("*.yaml"))
    assert {p.stem for p in sweeps} >= {"gan_toy_grid", "vae_beta", "gpt_width"}
    for path in sweeps:
        sweep = yaml.safe_load(path.read_text())
        assert sweep["command"][:4] == ["${env}", "${interpreter}", "-m", "lit_gen"]
        assert sweep["command"][-1] == "${args}"
    check.main([str(p) for p in sweeps])
    out = capsys.readouterr().out
    assert out.count("ok: ") == len(sweeps)


def test_unknown_sweep_key_is_named(tmp_path, capsys):
    sweep = yaml.safe_load((SWEEPS / "gan_toy_grid.yaml").read_text())
    sweep["parameters"]["model.learning_rate"] = {"values": [0.1, 0.2]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sweep))
    with pytest.raises(SystemExit) as exit_:
        check.main([str(bad)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "parameter 'model.learning_rate' is not a key the lit_gen CLI knows" in err[0]
    assert err[0].startswith("lit_gen: error: ")


def test_bad_sweep_value_is_named(tmp_path, capsys):
    sweep = yaml.safe_load((SWEEPS / "gan_toy_grid.yaml").read_text())
    sweep["parameters"]["model.loss"]["values"].append("lit_gen.losses.NoSuchLoss")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sweep))
    with pytest.raises(SystemExit):
        check.main([str(bad)])
    err = capsys.readouterr().err.strip()
    assert "parameter 'model.loss' = 'lit_gen.losses.NoSuchLoss' is rejected by the CLI" in err
