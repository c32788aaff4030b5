"""Offline-first W&B logging: what a fit leaves on disk, no prompt without credentials, other loggers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import wandb
import yaml
from helpers.configs import TINY_WANDB_GAN
from helpers.paths import CONFIGS
from helpers.runs import run_dirs
from helpers.wandb_runs import wandb_parts, wandb_records, wandb_run_files, wandb_summary
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_gen.callbacks import ModeMetrics, SampleQuality
from lit_gen.cli import RUN_DIR_PLACEHOLDER, LitGenCLI
from lit_gen.loggers import (
    RUN_ID_FILE,
    STEP_KEY,
    OfflineFirstWandbLogger,
    read_run_id,
    wandb_base_url,
    wandb_credentials_available,
    wandb_mode,
)
from lit_gen.metrics.features import RandomConvFeatures
from lit_gen.metrics.generative import metric_names


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_WANDB_GAN)
    return path


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

    by_kind = wandb_records(run_file)
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
        for r in wandb_records(files[1])["history"]
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


#: environment variables through which W&B finds credentials or its server
_WANDB_AUTH_ENV = (
    "WANDB_MODE",
    "WANDB_API_KEY",
    "WANDB_IDENTITY_TOKEN_FILE",
    "WANDB_BASE_URL",
    "WANDB_CONFIG_DIR",
)


@pytest.fixture
def no_credentials(tmp_path, monkeypatch) -> Path:
    """A user without W&B credentials: HOME is an empty temporary folder, no W&B variables are set. Returns
    HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for key in (*_WANDB_AUTH_ENV, "NETRC"):
        monkeypatch.delenv(key, raising=False)
    return home


def netrc_entry(host: str) -> str:
    return f"machine {host}\n  login user\n  password {'x' * 40}\n"


def test_mode_follows_wandb_mode_and_credentials(no_credentials, monkeypatch):
    assert not wandb_credentials_available()
    assert wandb_mode() == "offline"
    (no_credentials / ".netrc").write_text(netrc_entry(urlsplit(wandb.Settings().base_url).netloc))
    assert wandb_credentials_available() and wandb_mode() == "online"
    assert wandb_mode(offline=True) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    (no_credentials / ".netrc").unlink()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "y" * 40)
    assert wandb_mode() == "online"


def test_wandb_login_for_wandbs_default_host_runs_online(no_credentials):
    """``wandb login`` stores the key for wandb's own default host (``wandb.Settings().base_url``; since wandb
    0.31 not api.wandb.ai): that user runs online."""
    from wandb.sdk.lib import wbauth  # what ``wandb login`` calls to store the key

    assert wandb_mode() == "offline"
    wbauth.write_netrc_auth(host=wandb.Settings().base_url, api_key="z" * 40)
    assert (no_credentials / ".netrc").is_file()
    assert wbauth.read_netrc_auth(host=wandb.Settings().base_url) == "z" * 40  # wandb finds it too
    assert wandb_base_url() == wandb.Settings().base_url
    assert wandb_credentials_available() and wandb_mode() == "online"


@pytest.mark.parametrize(
    "where",
    ["netrc", "netrc_variable", "api_key_in_settings", "identity_token", "identity_token_in_settings"],
)
def test_credentials_wandb_would_find_mean_online(no_credentials, monkeypatch, tmp_path, where):
    settings = no_credentials / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    if where == "netrc":  # wandb reads a key stored for its former default host for its current one
        (no_credentials / ".netrc").write_text(netrc_entry("api.wandb.ai"))
    elif where == "netrc_variable":
        (tmp_path / "auth").write_text(netrc_entry(urlsplit(wandb.Settings().base_url).netloc))
        monkeypatch.setenv("NETRC", str(tmp_path / "auth"))
    elif where == "api_key_in_settings":
        settings.write_text(f"[default]\napi_key = {'k' * 40}\n")
    elif where == "identity_token":
        monkeypatch.setenv("WANDB_IDENTITY_TOKEN_FILE", str(tmp_path / "token.jwt"))
    else:
        settings.write_text(f"[default]\nidentity_token_file = {tmp_path / 'token.jwt'}\n")
    assert wandb_mode() == "online"


def test_the_server_comes_from_wandb_base_url_or_the_settings_file(no_credentials, monkeypatch, tmp_path):
    """A key is for one server: with another server configured (``WANDB_BASE_URL``, else ``base_url`` in the
    settings file that ``wandb login --host`` writes, in ``WANDB_CONFIG_DIR`` when set) only that server's
    entry counts; ``wandb offline`` (``mode`` in ./wandb/settings) wins over credentials."""
    default_host = urlsplit(wandb.Settings().base_url).netloc
    (no_credentials / ".netrc").write_text(netrc_entry(default_host) + netrc_entry("api.wandb.ai"))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com/")
    assert wandb_base_url() == "https://wandb.example.com"
    assert wandb_mode() == "offline"
    (no_credentials / ".netrc").write_text(netrc_entry("wandb.example.com"))
    assert wandb_mode() == "online"
    monkeypatch.delenv("WANDB_BASE_URL")
    assert wandb_mode() == "offline"
    for settings in (no_credentials / ".config" / "wandb", tmp_path / "config"):
        if settings != no_credentials / ".config" / "wandb":
            monkeypatch.setenv("WANDB_CONFIG_DIR", str(settings))
        settings.mkdir(parents=True)
        (settings / "settings").write_text("[default]\nbase_url = https://wandb.example.com\n")
        assert wandb_base_url() == "https://wandb.example.com"
        assert wandb_mode() == "online"
        (settings / "settings").unlink()
        assert wandb_mode() == "offline"
    (no_credentials / ".netrc").write_text(netrc_entry(default_host))
    assert wandb_mode() == "online"
    Path("wandb").mkdir()
    Path("wandb/settings").write_text("[default]\nmode = offline\n")
    assert wandb_mode() == "offline"


def test_run_tags_are_added_to_the_wandb_loggers_tags_once(cli, tiny_config):
    """The shipped configs share one logger block and give their own W&B tags as run.tags."""
    code, _, err = cli("fit", "--config", tiny_config, "--trainer.max_steps=2", "--run.tags=[grid, test]")
    assert code == 0, err
    (run_dir,) = run_dirs()
    config = run_dir / "config.yaml"
    wandb_logger = yaml.safe_load(config.read_text())["trainer"]["logger"][0]
    assert wandb_logger["init_args"]["tags"] == ["toy", "test", "grid"]
    # resuming from the saved config (which holds run.tags and the merged tags) adds no tag twice
    code, _, err = cli("fit", "--config", config, "--ckpt_path", "last", "--trainer.max_steps=4")
    assert code == 0, err
    for run_file in wandb_run_files(run_dir):
        (run,) = wandb_records(run_file)["run"]
        assert list(run.run.tags) == ["toy", "test", "grid"]
    assert len(wandb_run_files(run_dir)) == 2


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
    """Each config's loggers (configs/shared/loggers.yaml) hold the W&B logger; --trainer.logger=CSVLogger/
    TensorBoardLogger replaces them and parses without a save_dir (the run directory is filled in before
    instantiation)."""
    configs = sorted(CONFIGS.glob("*.yaml"))
    try:
        ParseOnly(args=["fit", "--config", str(configs[0])])
    except _Parsed as parsed:
        cli = parsed.args[0]
    for path in configs:
        cli.parse_arguments(cli.parser, ["fit", "--config", str(path)])
        loggers = cli.config.fit.trainer.logger
        loggers = loggers if isinstance(loggers, list) else [loggers]
        assert any(x.get("class_path") == "lit_gen.loggers.OfflineFirstWandbLogger" for x in loggers), (
            f"{path.name}: no lit_gen.loggers.OfflineFirstWandbLogger in trainer.logger"
        )
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


def free_port() -> int:
    """A local TCP port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("set_by", ["argument", "variable"])
def test_a_key_without_network_logs_offline_under_the_same_run_id(
    no_credentials, monkeypatch, tmp_path, capsys, set_by
):
    """Credentials but no server: W&B waits ``init_timeout`` (not its own 90 s), the run goes offline under the
    id it tried online, the failed attempt leaves no folder behind, and one line says so."""
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)
    assert wandb_mode() == "online"
    attempts = []
    real_init = wandb.init

    def init(**kwargs):
        attempts.append(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    if set_by == "argument":
        logger = OfflineFirstWandbLogger(project="lit_gen_tests", save_dir=str(tmp_path), init_timeout=1)
    else:
        monkeypatch.setenv("WANDB_INIT_TIMEOUT", "1")
        logger = OfflineFirstWandbLogger(project="lit_gen_tests", save_dir=str(tmp_path))
    run = logger.experiment
    assert run.offline
    assert [a["id"] for a in attempts] == [run.id, run.id]
    assert set_by == "variable" or attempts[0]["settings"].init_timeout == 1
    logger.log_metrics({"train/loss": 1.0}, step=3)
    logger.finalize("success")
    folders = [p.name for p in (tmp_path / "wandb").iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(folders) == 1 and folders[0].startswith("offline-run-") and folders[0].endswith(run.id)
    assert read_run_id(tmp_path) == run.id
    err = capsys.readouterr().err.splitlines()
    (failed,) = [line for line in err if line.startswith("lit_gen: W&B could not start online (")]
    assert "logging offline" in failed and "at most 1 s" in failed and "WANDB_INIT_TIMEOUT" in failed
    assert sum(line.startswith(f"lit_gen: W&B run {run.id} is offline in") for line in err) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_run_stopped_by_a_signal_is_preempted_and_its_resumption_resumes_it(cli, tiny_config, signum):
    """SIGTERM (as on a preempted node) or a first Ctrl-C stops the fit with last.ckpt: the W&B run is marked
    preempting and ends with the process's exit code (143 / 130); resuming the run directory starts a part W&B
    resumes (same run id)."""
    code, _, err = cli(
        "fit", "--config", tiny_config, "--trainer.callbacks+=helpers.callbacks.SignalMidBatch",
        "--trainer.callbacks.batch", "3", "--trainer.callbacks.signal", str(int(signum)),
    )  # fmt: skip
    assert code == 128 + signum, err
    (run_dir,) = run_dirs()
    code, _, err = cli("fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last")
    assert code == 0, err
    run_id = read_run_id(run_dir)
    stopped, resumed = wandb_parts(run_dir)
    assert stopped["run"][0].run.run_id == resumed["run"][0].run.run_id == run_id
    assert not stopped["run"][0].run.resume and "preempting" in stopped
    assert [r.exit.exit_code for r in stopped["exit"]] == [128 + signum]
    assert resumed["run"][0].run.resume and "preempting" not in resumed
    assert [r.exit.exit_code for r in resumed["exit"]] == [0]


def test_a_slurm_requeue_marks_the_run_preempting_and_the_following_sigterm_ends_it(tmp_path):
    """Lightning's SLURM requeue calls ``finalize("finished")`` and SLURM then stops the job with SIGTERM:
    one part, marked preempting, still logging until the stop, ended with exit code 143."""
    logger = OfflineFirstWandbLogger(project="lit_gen_tests", save_dir=str(tmp_path))
    logger.log_metrics({"train/loss": 1.0}, step=1)
    logger.finalize("finished")
    logger.log_metrics({"train/loss": 0.5}, step=2)  # the rest of the batch at which the requeue came
    try:
        raise SIGTERMException(128 + signal.SIGTERM)  # as Lightning raises it, with Checkpoint's exit code
    except SIGTERMException:
        logger.finalize("failed")  # Lightning calls it while handling the exception
    (part,) = wandb_parts(tmp_path)
    assert "preempting" in part and [r.exit.exit_code for r in part["exit"]] == [128 + signal.SIGTERM]
    losses = [i for r in part["history"] for i in r.history.item if "train/loss" in (i.key, *i.nested_key)]
    assert len(losses) == 2


def test_every_evaluation_metric_is_summarised_by_its_best_and_last_value(tmp_path):
    """FID/KID by their minimum, precision etc. and the mode metrics by their maximum, the reverse KL by its
    minimum — each with its last value too; the standard deviations and a diffusion model's NFE by their last
    value only."""
    logger = OfflineFirstWandbLogger(project="lit_gen_tests", save_dir=str(tmp_path))
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger], fast_dev_run=False)
    quality = SampleQuality(extractor=RandomConvFeatures(image_size=16, width=8))
    quality.setup(trainer, None, "fit")
    ModeMetrics().setup(trainer, None, "fit")
    names = {"fd_random", "kd_random", "kd_random_std", "precision_random", "recall_random"}
    names |= {"density_random", "coverage_random", "is_random", "is_random_std"}
    names |= {"modes", "high_quality", "reverse_kl", "nfe"}
    logged = {f"val/{name}" for name in metric_names(quality.extractor).values()} | set(ModeMetrics.GOALS)
    assert logged == {f"val/{name}" for name in names}
    for step, value in enumerate([2.0, 1.0, 3.0]):
        logger.log_metrics({f"val/{name}": value for name in names}, step=step)
    logger.finalize("success")
    (part,) = wandb_parts(tmp_path)
    summary = wandb_summary(part)
    for name in ("fd_random", "kd_random", "reverse_kl"):
        assert summary[f"val/{name}"] == {"min": 1.0, "last": 3.0}, name
    for name in (
        "precision_random",
        "recall_random",
        "density_random",
        "coverage_random",
        "is_random",
        "modes",
        "high_quality",
    ):
        assert summary[f"val/{name}"] == {"max": 3.0, "last": 3.0}, name
    assert summary["val/kd_random_std"] == summary["val/is_random_std"] == summary["val/nfe"] == {"last": 3.0}
