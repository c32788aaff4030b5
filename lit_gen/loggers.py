"""Offline-first Weights & Biases logging.

``OfflineFirstWandbLogger`` is Lightning's ``WandbLogger`` with the defaults a cluster or a laptop without an
account needs:

- **never prompts**: with ``WANDB_MODE`` unset and no credentials wandb would find by itself (see
  ``wandb_credentials_available``: ``wandb login``'s ``.netrc`` entry for the W&B server, ``WANDB_API_KEY``...)
  it runs offline by itself; ``WANDB_MODE`` (``online`` / ``offline`` / ``disabled``) is always honoured, and
  ``WANDB_PROJECT`` / ``WANDB_ENTITY`` override the config's project / entity (a sweep agent sets them);
- with credentials but no server in reach (a compute node) it waits ``init_timeout`` seconds (15, not W&B's
  90), then logs offline under the same run id and says so in one line;
- prints **one line** saying where the run is (its URL, or its offline folder and the ``wandb sync`` command);
- keeps its files in the run directory (``<run>/wandb/offline-run-*`` or ``run-*``) and writes the W&B run id
  to ``<run>/wandb_run_id``, so re-using the run directory (``--ckpt_path last``, a requeued SLURM job)
  continues the same W&B run: a run stopped by SIGTERM, Ctrl-C or a SLURM requeue is marked preempting, the
  part that continues it is started with ``resume="allow"``;
- defaults the W&B run name to ``<run.name>/<run directory>`` and the group to ``<run.name>``;
- logs the resolved config (``config.yaml``) as the W&B config;
- plots every metric against ``trainer/batch`` (training batches, not optimizer steps: a GAN batch makes
  several optimizer steps); evaluation metrics are summarised by their best and their last value
  (``define_wandb_summaries``).

``ResumableCSVLogger`` (the CLI's default logger) is Lightning's ``CSVLogger`` whose ``metrics.csv`` keeps the
rows logged before a resume instead of being deleted.
"""

from __future__ import annotations

import configparser
import csv
import netrc
import os
import secrets
import shutil
import signal
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_gen._lightning import (
    KeepingExperimentWriter,
    batches_done,
    logger_prefix,
    set_experiment,
    started_experiment,
    wandb_attaching,
    wandb_init_kwargs,
)
from lit_gen.run_dir import RUN_DIR_ENV

#: file in the run directory holding the W&B run id, read back when the run directory is reused
RUN_ID_FILE = "wandb_run_id"
#: the x axis of every W&B chart: training batches done
STEP_KEY = "trainer/batch"
#: W&B summary of a metric by its goal: the best value and the last one, or the last one only (e.g. of a
#: standard deviation, which has no better value)
SUMMARIES = {"min": "min,last", "max": "max,last", "last": "last"}


def _wandb_file_settings() -> dict[str, str]:
    """The ``[default]`` section of W&B's settings files, as ``wandb.init`` reads them: the global file
    (``$WANDB_CONFIG_DIR/settings``, else ``~/.config/wandb/settings``; ``wandb login --host`` writes
    ``base_url`` there) overridden by the workspace file (``./wandb/settings``; ``wandb offline`` writes
    ``mode`` there)."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    global_dir = Path(config_dir).expanduser() if config_dir else Path.home() / ".config" / "wandb"
    workspace_dir = Path(".wandb") if Path(".wandb").is_dir() else Path("wandb")
    values: dict[str, str] = {}
    for path in (global_dir / "settings", workspace_dir / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
            values.update(parser.items("default"))
        except (OSError, configparser.Error):
            continue
    return values


def wandb_base_url() -> str:
    """The W&B server ``wandb.init`` talks to: ``$WANDB_BASE_URL``, else ``base_url`` in W&B's settings files,
    else wandb's own default (``wandb.Settings().base_url``; it changed in wandb 0.31)."""
    import wandb

    url = os.environ.get("WANDB_BASE_URL") or _wandb_file_settings().get("base_url")
    return url.rstrip("/") if url else wandb.Settings().base_url


def _netrc_path() -> Path:
    """The ``.netrc`` file W&B reads and ``wandb login`` writes: ``$NETRC``, else ``~/.netrc``, else
    ``~/_netrc`` when only that one exists."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path.home() / ".netrc"
    windows = Path.home() / "_netrc"
    return windows if windows.exists() and not unix.exists() else unix


def wandb_credentials_available() -> bool:
    """True when ``wandb.init`` would find credentials without asking (no prompt, no network): an API key or
    identity-token file in the environment (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``) or in W&B's
    settings files, or a ``.netrc`` entry with a password for the host of ``wandb_base_url()`` — what
    ``wandb login`` writes. For wandb's default server an entry for ``api.wandb.ai`` counts too: wandb reads it
    for its CoreWeave-hosted default, and ``wandb login`` before 0.31 wrote it."""
    import wandb

    settings = _wandb_file_settings()
    for key in ("api_key", "identity_token_file"):
        if os.environ.get(f"WANDB_{key.upper()}") or settings.get(key):
            return True
    base_url = wandb_base_url()
    hosts = [urlsplit(base_url).netloc]
    if base_url == wandb.Settings().base_url:
        hosts.append("api.wandb.ai")
    try:
        entries = netrc.netrc(_netrc_path())
    except (OSError, netrc.NetrcParseError):
        return False
    return any((entries.authenticators(host) or ("", "", ""))[2] for host in hosts if host)


def wandb_mode(offline: bool = False) -> str:
    """The W&B mode to run in: ``$WANDB_MODE`` when set, else the ``mode`` of W&B's settings files (``wandb
    offline``), else offline when asked or without credentials (``wandb_credentials_available``), else online.
    Never prompts, never touches the network."""
    mode = os.environ.get("WANDB_MODE") or _wandb_file_settings().get("mode")
    if mode:
        return mode
    if offline or not wandb_credentials_available():
        return "offline"
    return "online"


def read_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id stored in ``run_dir`` (None when there is none)."""
    path = Path(run_dir) / RUN_ID_FILE
    text = path.read_text().strip() if path.is_file() else ""
    return text or None


def _new_run_id() -> str:
    """A new W&B run id (8 lowercase letters and digits, like W&B's own)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _define_summaries(run: Any, goals: Mapping[str, str]) -> None:
    for key, goal in goals.items():
        run.define_metric(key, step_metric=STEP_KEY, step_sync=True, summary=SUMMARIES[goal])


def define_wandb_summaries(trainer: Trainer, goals: Mapping[str, str]) -> None:
    """Tells the trainer's W&B loggers how to summarise metrics: ``goals`` maps each metric to ``"min"`` (lower
    is better), ``"max"`` (higher is better) or ``"last"`` (see ``SUMMARIES``). Call it from a callback's
    ``setup`` (the W&B run has started by then) for the metrics the callback logs."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and hasattr(logger.experiment, "define_metric"):
            _define_summaries(logger.experiment, goals)


class OfflineFirstWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` that never prompts, lives in the run directory and resumes its W&B run.

    Args:
        project: W&B project.
        name: W&B run name (default ``<run.name>/<run directory name>``).
        group: W&B group (default ``<run.name>``, e.g. the config file's name).
        tags: W&B tags.
        notes: W&B notes (a longer description of the run).
        entity: W&B entity (user or team; default: the account's default entity).
        job_type: W&B job type.
        save_dir: folder for W&B's files (default: the run directory, set by the CLI).
        offline: run offline even when credentials are available (``WANDB_MODE`` still wins).
        log_model: upload checkpoints as W&B artifacts (``True``: at the end; ``"all"``: every checkpoint).
        summary_min: metrics whose W&B summary is their minimum and last value (lower is better, e.g. FID).
        summary_max: metrics whose W&B summary is their maximum and last value.
        init_timeout: seconds to wait for the W&B server when starting online before logging offline instead
            (W&B's own default is 90; ``WANDB_INIT_TIMEOUT`` wins).
        **kwargs: further ``wandb.init`` arguments (``id``, ``settings``, ...).
    """

    def __init__(
        self,
        project: str = "lit_gen",
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        entity: str | None = None,
        job_type: str | None = None,
        save_dir: str | None = None,
        offline: bool = False,
        log_model: Literal["all"] | bool = False,
        summary_min: Sequence[str] = ("val/fid",),
        summary_max: Sequence[str] = (),
        init_timeout: float = 15.0,
        **kwargs: Any,
    ) -> None:
        extra = {"group": group, "tags": list(tags) if tags else None, "notes": notes, "entity": entity}
        extra["job_type"] = job_type
        # the CLI passes every ``wandb.init`` argument it knows, unset ones as None: keep W&B's defaults
        extra.update(kwargs)
        super().__init__(
            name=name,
            save_dir=save_dir or ".",
            project=project,
            log_model=log_model,
            **{k: v for k, v in extra.items() if v is not None},
        )
        #: the ``wandb.init`` arguments, unset ones left to W&B's defaults
        self.wandb_init = {k: v for k, v in wandb_init_kwargs(self).items() if v is not None or k == "id"}
        # Lightning asks W&B to resume every run; unless told otherwise, ``_init_kwargs`` asks only a later part
        self._choose_resume = kwargs.get("resume") is None and not os.environ.get("WANDB_RESUME")
        self._force_offline = offline
        self.summary_min, self.summary_max = list(summary_min), list(summary_max)
        self.init_timeout = init_timeout
        self._config_logged = False

    # --- starting the W&B run --------------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        """The lit_gen run directory (where ``wandb_run_id`` lives): the CLI's, else ``save_dir``."""
        return Path(os.environ.get(RUN_DIR_ENV) or self.save_dir or ".")

    def _init_kwargs(self) -> dict[str, Any]:
        """The ``wandb.init`` arguments but the mode. The run id is chosen here (unless a sweep agent chose
        it): the one stored in the run directory, which W&B is told to resume, or a new one that an offline
        retry keeps."""
        init = dict(self.wandb_init)
        run_dir = self._run_dir()
        if init.get("id") is None and not os.environ.get("WANDB_RUN_ID"):
            init["id"] = read_run_id(run_dir)
            if self._choose_resume:  # W&B records a run started with resume="allow" as resumed
                init.pop("resume", None)
                if init["id"]:
                    init["resume"] = "allow"
            init["id"] = init["id"] or _new_run_id()
        if os.environ.get(RUN_DIR_ENV):
            init.setdefault("group", run_dir.parent.name)
            if init.get("name") is None:
                init["name"] = f"{run_dir.parent.name}/{run_dir.name}"
        for key, variable in (("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY")):
            if os.environ.get(variable):  # set by a sweep agent, or by hand to redirect runs
                init[key] = os.environ[variable]
        return init

    def _init(self, init: dict[str, Any], mode: str, force_mode: bool = False):
        """``wandb.init(**init)`` in ``mode``."""
        import wandb

        init = dict(init)
        if mode == "offline" and (force_mode or not os.environ.get("WANDB_MODE")):
            init["mode"] = "offline"  # no credentials: never let W&B ask for them
        if mode in ("offline", "dryrun"):
            settings = {"silent": True}  # the one line printed below replaces W&B's banner
        else:
            settings = {} if os.environ.get("WANDB_INIT_TIMEOUT") else {"init_timeout": self.init_timeout}
        if init.get("settings") is None:
            init["settings"] = wandb.Settings(**settings)
        elif isinstance(init["settings"], Mapping):
            init["settings"] = {**settings, **init["settings"]}
        return wandb.init(**init)

    @property
    @rank_zero_experiment
    def experiment(self):
        """The ``wandb`` run, started on first use (on global rank 0 only)."""
        import wandb

        if started_experiment(self) is None and not wandb_attaching(self) and wandb.run is None:
            mode = wandb_mode(self._force_offline)
            init = self._init_kwargs()
            run_id = init.get("id") or os.environ.get("WANDB_RUN_ID")
            started = self._online_folders(init, run_id)
            try:
                set_experiment(self, self._init(init, mode))
            except Exception as err:  # e.g. credentials but no network (a compute node): log offline instead
                if mode != "online":
                    raise
                wandb.teardown()  # W&B's service still holds the run id of the failed attempt
                for folder in self._online_folders(init, run_id) - started:
                    shutil.rmtree(folder, ignore_errors=True)  # the failed attempt's, holding no data
                reason = " ".join(str(err).splitlines()[0].split())[:200]
                timeout = os.environ.get("WANDB_INIT_TIMEOUT") or f"{self.init_timeout:g}"
                print(
                    f"lit_gen: W&B could not start online ({reason}); logging offline. It waited at most {timeout}"
                    " s: set the logger's init_timeout or WANDB_INIT_TIMEOUT to wait longer",
                    file=sys.stderr,
                )
                set_experiment(self, self._init(init, "offline", force_mode=True))
            self._define_metrics()
            self._remember_run_id()
            self._announce()
        return super().experiment

    @staticmethod
    def _online_folders(init: Mapping[str, Any], run_id: str | None) -> set[Path]:
        """The online folders (``run-<date>-<id>``) of run ``run_id`` in W&B's directory."""
        root = Path(init.get("dir") or ".")
        return {p for name in ("wandb", ".wandb") for p in (root / name).glob(f"run-*-{run_id}")}

    def _define_metrics(self) -> None:
        run = started_experiment(self)
        if not hasattr(run, "define_metric"):
            return
        run.define_metric(STEP_KEY)
        run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
        goals = {**{key: "min" for key in self.summary_min}, **{key: "max" for key in self.summary_max}}
        _define_summaries(run, goals)

    def _remember_run_id(self) -> None:
        run_id = getattr(started_experiment(self), "id", None)
        run_dir = self._run_dir()
        if run_id and run_dir.is_dir() and read_run_id(run_dir) != run_id:
            (run_dir / RUN_ID_FILE).write_text(f"{run_id}\n")

    def _announce(self) -> None:
        run = started_experiment(self)
        settings = getattr(run, "settings", None)
        if settings is None or settings.mode == "disabled" or not getattr(run, "id", None):
            return
        if run.offline:
            sync_dir = Path(run.settings.sync_dir)
            where = os.path.relpath(sync_dir)
            # a resumed offline run has one folder per part: sync them together (in order of start time)
            parts = sorted(sync_dir.parent.glob(f"offline-run-*-{run.id}"))
            target = where if len(parts) <= 1 else str(Path(where).parent / f"offline-run-*-{run.id}")
            line = f"W&B run {run.id} is offline in {where}; upload it with: wandb sync {target}"
        else:
            line = f"W&B run {run.id}: {run.url}"
        print(f"lit_gen: {line}", file=sys.stderr, flush=True)

    # --- logging ---------------------------------------------------------------------------------------------

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """Records the resolved config (``config.yaml`` as a nested dict) as the W&B run's config."""
        self.experiment.config.update(dict(config), allow_val_change=True)
        self._config_logged = True

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The model's hyper-parameters, unless the resolved config (which holds them) was logged already."""
        if not self._config_logged:
            super().log_hyperparams(params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Logs ``metrics`` with ``trainer/batch = step`` (callers pass training batches done)."""
        prefix = f"{logger_prefix(self)}{self.LOGGER_JOIN_CHAR}" if logger_prefix(self) else ""
        metrics = {f"{prefix}{key}": value for key, value in metrics.items()}
        if step is not None:
            metrics[STEP_KEY] = step
        self.experiment.log(metrics)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Uploads checkpoints (``log_model``) and finishes the W&B run, so that its files are complete on
        disk when the trainer returns (``finish`` alone leaves the offline file partly unwritten); a later use of
        the logger continues the same run.

        A run stopped to be resumed — by SIGTERM or a first Ctrl-C, which save ``last.ckpt`` (Lightning calls
        this inside its handler of the ``SIGTERMException``), or by a SLURM requeue (status ``"finished"``) — is
        marked preempting, as W&B expects of a run that a later part resumes. At a requeue the run stays open:
        the SIGTERM with which SLURM stops the job finishes it (exit code 143), and a requeue that fails trains
        on in the same run."""
        super().finalize(status)
        run = started_experiment(self)
        if run is None or not hasattr(run, "finish"):
            return
        if status == "finished":
            run.mark_preempting()
            return
        stop = sys.exc_info()[1]
        if isinstance(stop, SIGTERMException):
            run.mark_preempting()
            exit_code = stop.code if isinstance(stop.code, int) else 128 + signal.SIGTERM
        else:
            exit_code = 0 if status == "success" else 1
        import wandb

        run.finish(exit_code=exit_code)
        set_experiment(self, None)
        wandb.teardown()  # waits until W&B's service has written the run's files


# --- CSV ---------------------------------------------------------------------------------------------------------


def _row_step(row: Mapping[str, Any]) -> int | None:
    value = row.get("step")
    return None if value in (None, "") else int(float(value))


def _row_keys(row: Mapping[str, Any]) -> frozenset[str]:
    """The metrics a row holds (its non-empty columns other than ``step``)."""
    return frozenset(k for k, v in row.items() if k != "step" and v not in (None, ""))


class _HistoryWriter(KeepingExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept (Lightning deletes it) until
    ``restart`` says whether the run continues it or starts afresh."""

    def __init__(self, log_dir: str) -> None:
        self.fs = get_filesystem(log_dir)
        super().__init__(log_dir)
        #: rows of the batch a resumed run restarted from that the resumed run may log again
        self.replaceable: list[dict[str, str]] = []
        self.metrics_keys = self.read_rows()[0]

    def read_rows(self) -> tuple[list[str], list[dict[str, str]]]:
        """(header, rows) of ``metrics.csv`` as written (values as strings); empty when there is none."""
        if not self.fs.isfile(self.metrics_file_path):
            return [], []
        with self.fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            return list(reader.fieldnames or []), list(reader)

    def write_rows(self, rows: list[dict[str, str]]) -> None:
        with self.fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)

    def restart(self, batches: int | None) -> None:
        """Continues the history after ``batches`` training batches, or starts a new one (None)."""
        self.replaceable = []
        if batches is None:
            if self.fs.isfile(self.metrics_file_path):
                self.fs.rm_file(self.metrics_file_path)
            self.metrics_keys = []
            return
        header, rows = self.read_rows()
        if not header:
            return
        # Rows of later batches came after the checkpoint and are logged again. At step == batches, the rows
        # logged before the checkpoint (callbacks at the end of that batch) are not, but Lightning's row of the
        # next batch (its step counts the batches before it) is: such a row replaces the old one in `save`.
        kept = [row for row in rows if (_row_step(row) or 0) <= batches]
        self.replaceable = [row for row in kept if _row_step(row) == batches]
        if len(kept) < len(rows):
            self.write_rows(kept)

    def save(self) -> None:
        if self.replaceable and self.metrics:
            logged = {(_row_step(m), _row_keys(m)) for m in self.metrics}
            stale = [row for row in self.replaceable if (_row_step(row), _row_keys(row)) in logged]
            if stale:
                self.write_rows([row for row in self.read_rows()[1] if row not in stale])
                self.replaceable = [row for row in self.replaceable if row not in stale]
        super().save()


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` whose ``metrics.csv`` survives a resume.

    Lightning deletes ``metrics.csv`` whenever a run starts in its folder, so resuming a run
    (``fit --ckpt_path last``, a requeued SLURM job) lost every row logged before. With ``ContinueLogs``
    (a callback the CLI adds to every fit) a resumed run keeps the rows of the batches up to its checkpoint
    and drops those of later batches, which it logs again: the file ends as an uninterrupted run's would. A
    run that starts afresh in the folder replaces the file, as with Lightning.

    Args: as Lightning's ``CSVLogger``, except that ``flush_logs_every_n_steps`` defaults to 1: rows are
    written as they are logged, so a killed run (SIGKILL, a node failure) keeps them.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> _HistoryWriter:
        if started_experiment(self) is None:
            get_filesystem(self.root_dir).makedirs(self.root_dir, exist_ok=True)
            set_experiment(self, _HistoryWriter(log_dir=self.log_dir))
        return started_experiment(self)

    @rank_zero_only
    def restart(self, batches: int | None) -> None:
        """Continues the history after ``batches`` training batches (a resumed run), or starts afresh (None)."""
        self.experiment.restart(batches)


class ContinueLogs(Callback):
    """At the start of training, tells each ``ResumableCSVLogger`` whether the run resumed (and after how many
    batches) or started afresh; and writes their rows to disk whenever a checkpoint is saved, so that a run
    killed later (SIGKILL, a node failure) has every row up to the checkpoint it will resume from."""

    @staticmethod
    def _loggers(trainer: Trainer) -> list[ResumableCSVLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, ResumableCSVLogger)]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = batches_done(trainer) if trainer.ckpt_path else None
        for logger in self._loggers(trainer):
            logger.restart(batches)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        for logger in self._loggers(trainer):
            logger.save()
