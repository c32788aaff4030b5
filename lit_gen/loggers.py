"""Offline-first Weights & Biases logging.

``OfflineFirstWandbLogger`` is Lightning's ``WandbLogger`` with the defaults a cluster or a laptop without an
account needs:

- **never prompts**: with ``WANDB_MODE`` unset and no credentials (no ``WANDB_API_KEY``, no ``.netrc`` entry
  for the W&B host) it runs offline by itself; ``WANDB_MODE`` (``online`` / ``offline`` / ``disabled``) is
  always honoured, and ``WANDB_PROJECT`` / ``WANDB_ENTITY`` override the config's project / entity (a
  sweep agent sets them);
- prints **one line** saying where the run is (its URL, or its offline folder and the ``wandb sync`` command);
- keeps its files in the run directory (``<run>/wandb/offline-run-*`` or ``run-*``) and writes the W&B run id
  to ``<run>/wandb_run_id``, so re-using the run directory (``--ckpt_path last``, a requeued SLURM job)
  continues the same W&B run;
- defaults the W&B run name to ``<run.name>/<run directory>`` and the group to ``<run.name>``;
- logs the resolved config (``config.yaml``) as the W&B config;
- plots every metric against ``trainer/batch`` (training batches, not optimizer steps: a GAN batch makes
  several optimizer steps) and summarises FID-like metrics by their minimum.
"""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

#: file in the run directory holding the W&B run id, read back when the run directory is reused
RUN_ID_FILE = "wandb_run_id"
#: the x axis of every W&B chart: training batches done
STEP_KEY = "trainer/batch"
#: environment variable naming the run directory (set by ``lit_gen.cli``)
_RUN_DIR_ENV = "LIT_GEN_RUN_DIR"


def wandb_credentials_available() -> bool:
    """True when W&B would find credentials without asking: ``WANDB_API_KEY`` / ``WANDB_IDENTITY_TOKEN_FILE``
    or a ``.netrc`` entry (``$NETRC`` or ``~/.netrc``) for the W&B host (``WANDB_BASE_URL``)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(offline: bool = False) -> str:
    """The W&B mode to run in: ``$WANDB_MODE`` when set, else offline when asked or without credentials."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if offline or not wandb_credentials_available():
        return "offline"
    return "online"


def read_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id stored in ``run_dir`` (None when there is none)."""
    path = Path(run_dir) / RUN_ID_FILE
    text = path.read_text().strip() if path.is_file() else ""
    return text or None


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
        summary_min: metrics whose W&B summary is their minimum (lower is better, e.g. FID).
        summary_max: metrics whose W&B summary is their maximum.
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
        self._wandb_init = {k: v for k, v in self._wandb_init.items() if v is not None or k == "id"}
        self._force_offline = offline
        self.summary_min, self.summary_max = list(summary_min), list(summary_max)
        self._config_logged = False

    # --- starting the W&B run --------------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        """The lit_gen run directory (where ``wandb_run_id`` lives): the CLI's, else ``save_dir``."""
        return Path(os.environ.get(_RUN_DIR_ENV) or self._save_dir or ".")

    def _init_kwargs(self, mode: str, force_mode: bool = False) -> dict[str, Any]:
        import wandb

        init = dict(self._wandb_init)
        run_dir = self._run_dir()
        if init.get("id") is None and not os.environ.get("WANDB_RUN_ID"):  # a sweep agent chooses the id
            init["id"] = read_run_id(run_dir)
        if os.environ.get(_RUN_DIR_ENV):
            init.setdefault("group", run_dir.parent.name)
            if init.get("name") is None:
                init["name"] = f"{run_dir.parent.name}/{run_dir.name}"
        for key, variable in (("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY")):
            if os.environ.get(variable):  # set by a sweep agent, or by hand to redirect runs
                init[key] = os.environ[variable]
        if mode == "offline" and (force_mode or not os.environ.get("WANDB_MODE")):
            init["mode"] = "offline"  # no credentials: never let W&B ask for them
        if mode in ("offline", "dryrun") and "settings" not in init:
            # the one line printed below replaces W&B's banner
            init["settings"] = wandb.Settings(silent=True)
        return init

    @property
    @rank_zero_experiment
    def experiment(self):
        """The ``wandb`` run, started on first use (on global rank 0 only)."""
        import wandb

        if self._experiment is None and getattr(self, "_attach_id", None) is None and wandb.run is None:
            mode = wandb_mode(self._force_offline)
            init = self._init_kwargs(mode)
            try:
                self._experiment = wandb.init(**init)
            except Exception as err:  # e.g. credentials but no network (a compute node): log offline instead
                if mode != "online":
                    raise
                reason = " ".join(str(err).split())[:200]
                print(f"lit_gen: W&B could not start online ({reason}); logging offline", file=sys.stderr)
                self._experiment = wandb.init(**self._init_kwargs("offline", force_mode=True))
            self._define_metrics()
            self._remember_run_id()
            self._announce()
        return super().experiment

    def _define_metrics(self) -> None:
        run = self._experiment
        if not hasattr(run, "define_metric"):
            return
        run.define_metric(STEP_KEY)
        run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
        for key in self.summary_min:
            run.define_metric(key, step_metric=STEP_KEY, step_sync=True, summary="min")
        for key in self.summary_max:
            run.define_metric(key, step_metric=STEP_KEY, step_sync=True, summary="max")

    def _remember_run_id(self) -> None:
        run_id = getattr(self._experiment, "id", None)
        run_dir = self._run_dir()
        if run_id and run_dir.is_dir() and read_run_id(run_dir) != run_id:
            (run_dir / RUN_ID_FILE).write_text(f"{run_id}\n")

    def _announce(self) -> None:
        run = self._experiment
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
        prefix = f"{self._prefix}{self.LOGGER_JOIN_CHAR}" if self._prefix else ""
        metrics = {f"{prefix}{key}": value for key, value in metrics.items()}
        if step is not None:
            metrics[STEP_KEY] = step
        self.experiment.log(metrics)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Uploads checkpoints (``log_model``) and finishes the W&B run, so that its files are complete on
        disk when the trainer returns (``finish`` alone leaves the offline file partly unwritten); a later use of
        the logger continues the same run."""
        super().finalize(status)
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            import wandb

            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None
            wandb.teardown()  # waits until W&B's service has written the run's files
