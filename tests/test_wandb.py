"""Offline-first W&B logging: what a fit leaves on disk, no prompt without credentials, other loggers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, run_dirs

from lit_gen.cli import RUN_DIR_PLACEHOLDER, LitGenCLI
from lit_gen.commands.compare import read_wandb_records
from lit_gen.loggers import (
    RUN_ID_FILE,
    STEP_KEY,
    OfflineFirstWandbLogger,
    wandb_credentials_available,
    wandb_mode,
)

#: a toy GAN that trains in a second: 6 batches, samples and mode metrics every 3 batches
TINY = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 12
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    - class_path: lit_gen.loggers.OfflineFirstWandbLogger
      init_args: {project: lit_gen_tests, tags: [toy, test]}
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {name: csv, version: ""}
  callbacks:
    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 3, num_samples: 100}
    - class_path: lit_gen.callbacks.ModeMetrics
      init_args: {every_n_batches: 3, num_samples: 200}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {latent_dim: 2, hidden: [16], data_dim: 2}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {data_dim: 2, hidden: [16]}
    ema_decay: null
    generator_optimizer:
      class_path: torch.optim.Adam
      init_args: {lr: 0.0002, betas: [0.5, 0.999]}
    discriminator_optimizer:
      class_path: torch.optim.Adam
      init_args: {lr: 0.0002, betas: [0.5, 0.999]}
data:
  class_path: lit_gen.data.Grid
  init_args: {side: 5, spacing: 2.0, std: 0.05, batch_size: 32}
"""


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def wandb_run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def records(path: Path) -> dict[str, list]:
    by_kind: dict[str, list] = {}
    for record in read_wandb_records(path):
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    return by_kind


def test_fit_writes_an_offline_wandb_run_into_the_run_dir(cli, tiny_config):
    code, _, err = cli("fit", "--config", tiny_config)
    assert code == 0, err
    (run_dir,) = run_dirs()
    (run_file,) = wandb_run_files(run_dir)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert run_file.name == f"run-{run_id}.wandb"
    # one line says where the run is and how to upload it
    lines = [line for line in err.splitlines() if "W&B" in line or "wandb:" in line]
    assert lines == [
        f"lit_gen: W&B run {run_id} is offline in {run_file.parent}; upload it with: wandb sync {run_file.parent}"
    ]

    by_kind = records(run_file)
    (run,) = by_kind["run"]
    assert run.run.project == "lit_gen_tests"
    assert list(run.run.tags) == ["toy", "test"]
    assert run.run.run_group == "tiny" and run.run.display_name == f"tiny/{run_dir.name}"
    # the resolved config, as written to config.yaml
    config = {item.key: json.loads(item.value_json) for r in by_kind["config"] for item in r.config.update}
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"] == resolved["model"]
    assert config["trainer"]["max_steps"] == 12
    # metrics against trainer/batch (= training batches, not optimizer steps: a GAN batch makes two)
    metrics = {m.metric.name or m.metric.glob_name: m.metric for m in by_kind["metric"]}
    assert metrics["*"].step_metric == STEP_KEY
    assert metrics["val/fid"].summary.min and metrics["val/fid"].step_metric == STEP_KEY
    rows = [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in by_kind["history"]
    ]
    # Lightning logs a training batch's metrics at its index; evaluations come at batches done
    d_loss_steps = [row[STEP_KEY] for row in rows if "train/d_loss" in row]
    assert d_loss_steps == [0, 1, 2, 3, 4, 5]
    assert sorted({row[STEP_KEY] for row in rows if "val/modes" in row}) == [3, 6]
    # the sample grids, as W&B images, next to the PNGs in samples/
    assert [row[STEP_KEY] for row in rows if "samples/_type" in row] == [3, 6]
    assert len(list(run_file.parent.glob("files/media/images/samples_*.png"))) == 2
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == [
        "batch_0000003.png",
        "batch_0000006.png",
    ]
    assert (run_dir / "csv" / "metrics.csv").is_file()

    # re-using the run directory (resume) continues the same W&B run
    code, _, err = cli(
        "fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last", "--trainer.max_steps", 16
    )
    assert code == 0, err
    files = wandb_run_files(run_dir)
    assert len(files) == 2 and all(f.name == f"run-{run_id}.wandb" for f in files)
    assert f"wandb sync {run_dir}/wandb/offline-run-*-{run_id}" in err
    resumed = [
        json.loads(i.value_json)
        for r in records(files[1])["history"]
        for i in r.history.item
        if (i.key or "/".join(i.nested_key)) == STEP_KEY
    ]
    assert max(resumed) == 8


def test_no_credentials_no_stdin_runs_offline_without_prompting(tmp_path, tiny_config):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LIT_GEN_", "SLURM_"))}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", WANDB_DISABLE_GIT="true")
    env.pop("NETRC", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lit_gen", "fit", "--config", str(tiny_config), "--trainer.max_steps=4"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("lit_gen: W&B")]
    assert len(ours) == 1 and "is offline in" in ours[0] and "upload it with: wandb sync" in ours[0]
    assert "API key" not in proc.stderr + proc.stdout
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert len(wandb_run_files(run_dir)) == 1


def test_mode_follows_wandb_mode_and_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(key, raising=False)
    assert not wandb_credentials_available()
    assert wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    assert wandb_credentials_available() and wandb_mode() == "online"
    assert wandb_mode(offline=True) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    (tmp_path / ".netrc").unlink()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "y" * 40)
    assert wandb_mode() == "online"


@pytest.mark.parametrize(
    "logger", ["CSVLogger", "TensorBoardLogger", "lit_gen.loggers.OfflineFirstWandbLogger"]
)
def test_command_line_logger_writes_into_the_run_dir(cli, tiny_config, logger):
    code, _, err = cli("fit", "--config", tiny_config, "--trainer.max_steps=2", f"--trainer.logger={logger}")
    assert code == 0, err
    (run_dir,) = run_dirs()
    if logger == "CSVLogger":
        assert (run_dir / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    elif logger == "TensorBoardLogger":
        assert list((run_dir / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))
    else:
        assert len(wandb_run_files(run_dir)) == 1
    assert not list(Path.cwd().glob("lightning_logs")) and not (Path.cwd() / "wandb").exists()


class _Parsed(Exception):
    pass


class ParseOnly(LitGenCLI):
    """Stops after parsing; its parser is then reused (building one takes seconds)."""

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self)


def test_every_shipped_config_logs_to_wandb_and_accepts_other_loggers():
    """Each config's logger block holds the W&B logger; --trainer.logger=CSVLogger/TensorBoardLogger replaces
    it and parses without a save_dir (the run directory is filled in before instantiation)."""
    configs = sorted(CONFIGS.glob("*.yaml"))
    for path in configs:
        loggers = yaml.safe_load(path.read_text())["trainer"].get("logger")
        loggers = loggers if isinstance(loggers, list) else [loggers]
        assert any(
            isinstance(x, dict) and x.get("class_path") == "lit_gen.loggers.OfflineFirstWandbLogger"
            for x in loggers
        ), f"{path.name}: no lit_gen.loggers.OfflineFirstWandbLogger in trainer.logger"
    try:
        ParseOnly(args=["fit", "--config", str(configs[0])])
    except _Parsed as parsed:
        cli = parsed.args[0]
    for path in configs:
        for logger in ("CSVLogger", "TensorBoardLogger"):
            cli.parse_arguments(cli.parser, ["fit", "--config", str(path), f"--trainer.logger={logger}"])
            parsed_logger = cli.config.fit.trainer.logger
            assert parsed_logger.class_path == f"lightning.pytorch.loggers.{logger}", path.name
            assert parsed_logger.init_args.save_dir == RUN_DIR_PLACEHOLDER, path.name


def test_wandb_mode_online_without_credentials_falls_back_to_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "online")
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(key, raising=False)
    logger = OfflineFirstWandbLogger(project="lit_gen_tests", save_dir=str(tmp_path))
    assert logger.experiment.offline
    logger.log_metrics({"train/loss": 1.0}, step=3)
    logger.finalize("success")
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("lit_gen: W&B could not start online (") for line in err)
    assert sum(line.startswith("lit_gen: W&B run ") and "is offline in" in line for line in err) == 1
    assert (tmp_path / RUN_ID_FILE).is_file()
