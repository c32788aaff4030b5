"""The ``python -m lit_gen`` command line: Lightning's CLI for fit/validate/test/predict, plus the extra
subcommands ``sample``, ``evaluate``, ``submit`` and ``compare`` (each in ``lit_gen/commands/``).

Every run gets its own directory (``lit_gen.run_dir``) holding ``config.yaml`` (the resolved config),
``checkpoints/``, ``samples/`` and the loggers' files. Re-running with a run's own ``config.yaml`` reuses its
directory, so ``fit --config runs/.../config.yaml --ckpt_path last`` resumes it; class paths that moved since
that config was written are read as their new ones (``lit_gen.checkpoints.MOVED_CLASS_PATHS``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError, Namespace, get_loader, set_loader
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback

from lit_gen._lightning import (
    CLI_HPARAMS_KEYS,
    ConfigOverCheckpointCLI,
    parse_without_validation,
    saved_class_path,
)
from lit_gen.callbacks.progress import ProgressBar
from lit_gen.callbacks.reliability import Checkpoint, NonFiniteGuard
from lit_gen.callbacks.slurm import SLURMRequeue
from lit_gen.checkpoints import MOVED_CLASS_PATHS, newest_checkpoint, read_checkpoint, upgrade_class_paths
from lit_gen.errors import LitGenError, fail, name_bad_config_file, summarize_parse_error, user_error_in
from lit_gen.loggers import ContinueLogs
from lit_gen.run_dir import RUN_DIR_ENV, RunDir, fixed_run_dir, owns_run_dir, run_name, slurm_job_tag

#: subcommands that are not Trainer methods: name -> module with a ``main(argv)`` function
EXTRA_COMMANDS = {
    "sample": "lit_gen.commands.sample",
    "evaluate": "lit_gen.commands.evaluate",
    "submit": "lit_gen.commands.submit",
    "compare": "lit_gen.commands.compare",
}

#: every subcommand with its one-line description, for the top-level help
COMMAND_HELP = {
    "fit": "train a model (python -m lit_gen fit --config configs/gan.yaml)",
    "validate": "run a model over its validation data",
    "test": "run a model over its test data",
    "predict": "run a model's predict_step over its predict data",
    "sample": "write samples of a checkpoint (grid, images, samples.pt)",
    "evaluate": "FID / KID / IS / precision-recall of a checkpoint's samples or a folder of images",
    "submit": "run a fit config as a SLURM batch job",
    "compare": "runs side by side: their configs' differences and metrics",
}


# --- CPU threads -----------------------------------------------------------------------------------------------

#: cgroup v2 file holding a container's CPU quota ("max 100000" or "<quota> <period>")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its CPU affinity, capped by a container's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_threads() -> int:
    """torch's intra-op threads when ``--threads`` is not given: ``OMP_NUM_THREADS`` when set, else
    ``SLURM_CPUS_PER_TASK`` (CPUs allocated to this task alone), else half the available CPUs (at least 1).

    torch's default (one thread per core) stalls on a shared machine: its threads wait for each other at the end
    of every parallel operation, so one thread pre-empted by another process holds up all of them (on 2 cores
    beside one busy process, 100 quickstart batches took 132-175 s with 2 threads and 18 s with 1)."""
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, available_cpus() // 2)


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op threads to ``threads`` (``None``: ``default_threads()``) and returns the number.
    An explicit number also goes into ``OMP_NUM_THREADS``, so that processes started from this one (DDP) use
    it and Lightning does not replace it."""
    if threads is not None and threads < 1:
        raise LitGenError(f"threads: must be at least 1, got {threads}")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    number = default_threads() if threads is None else threads
    torch.set_num_threads(number)
    return number


# --- reading and writing the config ----------------------------------------------------------------------------

#: jsonargparse's parser mode of the CLI: YAML, with the class paths that moved read as their new ones
PARSER_MODE = "lit_gen_yaml"
_read_yaml = get_loader("yaml")
#: moved class paths (old -> new) read since the CLI last reported them
_moved_paths_read: dict[str, str] = {}


def read_yaml_upgrading_class_paths(text: str) -> Any:
    """jsonargparse's YAML loader, with the class paths that moved replaced by their new ones (and noted), so
    that a run's ``config.yaml`` written before a class moved still resumes."""
    value = _read_yaml(text)
    upgraded = upgrade_class_paths(value)
    if upgraded != value:
        _moved_paths_read.update((old, new) for old, new in MOVED_CLASS_PATHS.items() if old in text)
    return upgraded


set_loader(PARSER_MODE, read_yaml_upgrading_class_paths, exceptions=(yaml.YAMLError,))

#: ``save_dir`` of a logger that did not set one, until the run directory is known
RUN_DIR_PLACEHOLDER = "<run dir>"


def _logger_configs(config: Namespace | None) -> list[Namespace]:
    """The ``class_path``/``init_args`` entries of ``trainer.logger`` (one logger or a list)."""
    logger = config.get("trainer.logger") if isinstance(config, Namespace) else None
    loggers = logger if isinstance(logger, list) else [logger]
    return [x for x in loggers if isinstance(x, Namespace) and isinstance(x.get("init_args"), Namespace)]


class SaveRunConfig(SaveConfigCallback):
    """Writes the resolved config as ``config.yaml`` into the run directory (rank 0, overwriting a resumed
    run's copy), instead of into a logger's version folder. A resumed run's copy keeps its ``ckpt_path``: the
    checkpoint a resume starts from (``last``, a requeued SLURM job's ``hpc``) is not part of the run's config."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            config = self.config
            if path.is_file() and "ckpt_path" in config:
                config = config.clone()
                config.ckpt_path = (yaml.safe_load(path.read_text()) or {}).get("ckpt_path")
            tmp = path.with_name(f".{path.name}.tmp")
            self.parser.save(config, str(tmp), skip_none=False, overwrite=True, multifile=False)
            os.replace(tmp, path)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        """Hands the resolved config to the loggers that record one (``log_config``, e.g. W&B's run config)."""
        loggers = [logger for logger in trainer.loggers if hasattr(logger, "log_config")]
        if loggers:
            config = yaml.safe_load((Path(trainer.default_root_dir) / self.config_filename).read_text())
            for logger in loggers:
                logger.log_config(config)


def _moved(path: str | None, old_root: Path, new_root: Path) -> str | None:
    """``path`` re-rooted from ``old_root`` to ``new_root`` when it lies inside ``old_root``; else unchanged."""
    if not path:
        return path
    try:
        return str(new_root / Path(path).relative_to(old_root))
    except ValueError:
        return path


def point_into_run_dir(config: Namespace, run_dir: Path) -> None:
    """Points a fit config's paths (checkpoints, loggers) into ``run_dir``."""
    config.run.dir = str(run_dir)
    # a config saved by an earlier run holds paths inside that run's directory: they move with the run
    previous = config.trainer.default_root_dir
    if previous and Path(previous) != run_dir:
        config.checkpoint.dirpath = _moved(config.checkpoint.dirpath, Path(previous), run_dir)
        for logger in _logger_configs(config):
            save_dir = logger.init_args.get("save_dir")
            logger.init_args.save_dir = _moved(save_dir, Path(previous), run_dir)
    config.trainer.default_root_dir = str(run_dir)
    if config.checkpoint.dirpath is None:
        config.checkpoint.dirpath = str(run_dir / "checkpoints")
    if config.trainer.logger in (None, True):
        config.trainer.logger = Namespace(
            class_path="lit_gen.loggers.ResumableCSVLogger",
            init_args=Namespace(save_dir=str(run_dir), name="csv", version=""),
        )
    for logger in _logger_configs(config):  # loggers that set no save_dir write into the run directory
        if logger.init_args.get("save_dir") in (None, "", ".", RUN_DIR_PLACEHOLDER):
            logger.init_args.save_dir = str(run_dir)
    # the configs share one logger block (configs/shared/loggers.yaml): each config's own tags are run.tags
    for logger in _logger_configs(config):
        if config.run.tags and "tags" in logger.init_args:
            tags = [*(logger.init_args.tags or []), *config.run.tags]
            logger.init_args.tags = list(dict.fromkeys(tags))


# --- the console -----------------------------------------------------------------------------------------------

#: warnings and log lines Lightning prints on every fit that say nothing about a lit_gen run: a GAN or VAE
#: validates in callbacks (no ``validation_step``), logs on an epoch's last batch whatever ``log_every_n_steps``
#: is, and the remaining ones are about Lightning's own dependencies and products
IRRELEVANT_WARNINGS = (
    r".*You passed in a `val_dataloader` but have no `validation_step`",
    r".*is smaller than the logging interval",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
)
IRRELEVANT_LOG_LINES = ("💡 Tip:", "GPU available: False", "TPU available: False", "Seed set to")
#: the loggers Lightning writes those lines with
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(IRRELEVANT_LOG_LINES)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hides ``IRRELEVANT_WARNINGS`` and ``IRRELEVANT_LOG_LINES`` for a while."""
    drop = _DropLines()
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    with warnings.catch_warnings():
        for message in IRRELEVANT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


# --- resuming --------------------------------------------------------------------------------------------------


def last_checkpoint(dirpath: str | Path) -> Path | None:
    """The newest ``last.ckpt`` (or ``last-vN.ckpt``) in ``dirpath``, as ``--ckpt_path last`` finds it."""
    paths = [p for p in Path(dirpath).glob("last*.ckpt") if re.fullmatch(r"last(-v?\d+)?\.ckpt", p.name)]
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def _is_optimizer_or_scheduler(spec: Any) -> bool:
    """Whether a config value chooses an optimizer or an LR scheduler (whose state a checkpoint restores)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        return False
    module, _, name = spec["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(
        cls, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    )


def _differing_leaves(old: Any, new: Any, key: str) -> list[str]:
    """``key.sub.key: old -> new`` for each leaf where two plain config values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for k in sorted(old.keys() | new.keys(), key=str)
            if old.get(k) != new.get(k)
            for line in _differing_leaves(old.get(k), new.get(k), f"{key}.{k}")
        ]
    short = [v["class_path"] if isinstance(v, dict) and "class_path" in v else v for v in (old, new)]
    return [f"{key}: {short[0]!r} -> {short[1]!r}"]


def _plain(value: Any) -> Any:
    """A config value as plain data (callables by import path), to compare a config with stored hparams."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def check_resume(config: Namespace, ckpt_path: Path) -> None:
    """``ckpt_path`` must be a readable checkpoint (one-line error otherwise, loaded with ``weights_only``) of
    the config's model class. Resuming restores the optimizers' and LR schedulers' states, so settings of theirs
    that differ from the checkpoint's would not be used, while ``config.yaml`` would claim they were: that is an
    error naming them. Other differing ``model.init_args`` are used, and named in a warning. The checkpoint's
    class paths that moved count as their new ones."""
    checkpoint = read_checkpoint(ckpt_path)
    hparams = upgrade_class_paths(dict(checkpoint.get("hyper_parameters") or {}))
    stored_class = saved_class_path(hparams)
    hparams = {k: v for k, v in hparams.items() if k not in CLI_HPARAMS_KEYS}
    model = config.get("model")
    if stored_class is None or not isinstance(model, Namespace):
        return
    if stored_class != model.get("class_path"):
        raise LitGenError(
            f"ckpt_path: '{ckpt_path}' holds a {stored_class}, but the config's model is "
            f"{model.get('class_path')}"
        )
    current = _plain(model.get("init_args")) or {}
    differing = sorted(k for k in hparams.keys() & current.keys() if _plain(hparams[k]) != current[k])
    restored = [
        k
        for k in differing
        if _is_optimizer_or_scheduler(_plain(hparams[k])) or _is_optimizer_or_scheduler(current[k])
    ]
    if restored:
        changes = [
            line for k in restored for line in _differing_leaves(_plain(hparams[k]), current[k], f"model.{k}")
        ]
        raise LitGenError(
            f"ckpt_path: '{ckpt_path}' continues with its own optimizer and LR scheduler states, which the "
            f"config changes ({'; '.join(changes)}): resume with the checkpoint's values, or train from scratch "
            "without --ckpt_path"
        )
    if differing:
        warnings.warn(
            f"--ckpt_path {ckpt_path}: the config's model.init_args differ from the checkpoint's in "
            f"{', '.join(differing)}; the config's values are used",
            stacklevel=2,
        )


# --- the CLI ---------------------------------------------------------------------------------------------------


class LitGenCLI(ConfigOverCheckpointCLI):
    """LightningCLI with per-run directories (``lit_gen.run_dir``), a forced ``ModelCheckpoint``
    (``--checkpoint.*``) that keeps ``last.ckpt``, optimizers injected into the model from YAML
    (``auto_configure_optimizers=False``), ``--threads``, a quiet console with a summary at the end of ``fit``,
    and parse errors raised (not printed) so that ``main`` can report them in one line. The hyper-parameters
    stored in ``--ckpt_path`` do not override the config: ``check_resume`` compares the two."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        mode = {"parser_mode": PARSER_MODE}
        kwargs.setdefault("parser_kwargs", {**mode, **{name: mode for name in self.subcommands()}})
        trainer_defaults = kwargs.setdefault("trainer_defaults", {})
        # SLURM auto-requeue saves its checkpoint between batches (a no-op outside SLURM); a resumed run
        # continues its CSV log
        trainer_defaults["callbacks"] = [
            *trainer_defaults.get("callbacks", []),
            SLURMRequeue(),
            ContinueLogs(),
        ]
        self.run_dir: Path | None = None
        inherited = os.environ.get(RUN_DIR_ENV) is not None
        self._owner = owns_run_dir()
        # the run directory this process owns (None in the other processes of a run): locked while the run
        # uses it, restored after a failed start
        self._run: RunDir | None = None
        self._started = time.monotonic()
        try:
            with quiet_lightning():
                super().__init__(**kwargs)
        except BaseException:
            self.cleanup_after_failure()
            raise
        else:
            if self._run is not None:
                self._run.remove_if_empty()  # e.g. after fast_dev_run
        finally:
            if self._run is not None:
                self._run.release_lock()
            if not inherited:  # in-process callers (tests) start each run afresh
                os.environ.pop(RUN_DIR_ENV, None)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses like LightningCLI, but a logger given without ``save_dir`` (``--trainer.logger=CSVLogger``)
        is valid: it gets the run directory in ``before_instantiate_classes``. ``--key=None`` means null, as
        a W&B sweep agent writes a null parameter value. Class paths that moved are read as their new ones,
        with a one-line notice."""
        if isinstance(args, (dict, Namespace)):
            return super().parse_arguments(parser, args)
        if args is not None:
            args = [f"{a[:-5]}=null" if a.startswith("--") and a.endswith("=None") else a for a in args]
        _moved_paths_read.clear()
        self.config = parse_without_validation(parser, args)
        for logger in _logger_configs(self.config.get(str(self.config.get("subcommand")))):
            if logger.init_args.get("save_dir") in (None, ""):
                logger.init_args.save_dir = RUN_DIR_PLACEHOLDER
        try:
            parser.validate(self.config)
        except (TypeError, KeyError, ValueError) as err:
            parser.error(str(err), err)
        if _moved_paths_read and self._owner:
            moved = ", ".join(f"{old} -> {new}" for old, new in _moved_paths_read.items())
            print(
                f"lit_gen: config: read class paths that moved as their new ones ({moved})", file=sys.stderr
            )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="CPU threads of torch's operations (default: $OMP_NUM_THREADS, else $SLURM_CPUS_PER_TASK, "
            "else half the CPUs this process may use).",
        )
        parser.add_argument(
            "--run.root", type=str, default="runs", help="Folder holding all run directories."
        )
        parser.add_argument(
            "--run.name",
            type=str | None,
            default=None,
            help="Experiment name (default: the config file's stem).",
        )
        parser.add_argument(
            "--run.dir", type=str | None, default=None, help="Use this run directory (e.g. to resume a run)."
        )
        parser.add_argument(
            "--run.tags",
            type=list[str] | None,
            default=None,
            help="W&B tags of the run, added to those of the loggers that take tags.",
        )
        # ModelCheckpoint + exact resume (RNG states) + atomic saves + save on SIGTERM / Ctrl-C
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        # a run directory holds one run: a re-run into it overwrites last.ckpt instead of adding last-v1.ckpt and
        # leaving a stale last.ckpt behind (the path `sample` and the README use)
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")

    def before_instantiate_classes(self) -> None:
        """Checks what a run starts from (``--ckpt_path``), then chooses, takes and locks its run directory."""
        config = self.config[self.subcommand]
        set_threads(config.get("threads"))
        if self.subcommand == "fit":
            for key in ("max_steps", "max_epochs"):
                if config.trainer.get(key) == 0:
                    raise LitGenError(f"trainer.{key}: 0 trains nothing (-1 or null: no limit)")
        run_dir = fixed_run_dir(config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            if run_dir is None:
                raise LitGenError(
                    "ckpt_path: 'last' resumes a run: give the run's own config (--config "
                    "runs/<name>/<run>/config.yaml) or its directory (--run.dir)"
                )
            self._use_run_dir(config, run_dir)
            found = last_checkpoint(config.checkpoint.dirpath)
            if found is None and not slurm_job_tag():  # inside SLURM, `last` may precede the first checkpoint
                raise LitGenError(f"ckpt_path: 'last': no last checkpoint in '{config.checkpoint.dirpath}'")
            if found is not None:
                check_resume(config, found)
                # resuming in place: of course the run's checkpoint directory holds checkpoints
                warnings.filterwarnings(
                    "ignore", message=r".*Checkpoint directory .* exists and is not empty"
                )
        elif ckpt_path and str(ckpt_path) not in ("best", "hpc") and "://" not in str(ckpt_path):
            check_resume(config, Path(ckpt_path))
        if run_dir is None:  # a new one, claimed once the arguments are known to be good
            self._run = RunDir.claim(config.run.root, run_name(config))
            run_dir = self._run.path
        elif self._owner:
            self._run = RunDir.take(run_dir)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
        self._use_run_dir(config, run_dir)
        if self._owner:
            self._run.acquire_lock()
            print(f"lit_gen: run directory {run_dir}", file=sys.stderr)

    def _use_run_dir(self, config: Namespace, run_dir: Path) -> None:
        self.run_dir = run_dir
        os.environ[RUN_DIR_ENV] = str(run_dir)
        point_into_run_dir(config, run_dir)

    def instantiate_classes(self) -> None:
        """As LightningCLI; then ``--ckpt_path last`` becomes the run's checkpoint with the most training
        progress, ``last.ckpt`` or a SLURM job's ``hpc_ckpt_N.ckpt`` (Lightning's ``last`` ignores the latter)."""
        super().instantiate_classes()
        config = self.config_init.get(str(self.subcommand))
        if isinstance(config, Namespace) and config.get("ckpt_path") == "last" and self.run_dir is not None:
            dirpath = self.config[self.subcommand].checkpoint.dirpath or self.run_dir / "checkpoints"
            newest = newest_checkpoint(self.run_dir, dirpath)
            if newest is not None:
                config.ckpt_path = str(newest)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """As LightningCLI; the progress bar is ``lit_gen.callbacks.ProgressBar`` (redrawn at most twice a
        second) unless the config chose one or turned it off."""
        trainer = {
            **(self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}),
            **kwargs,
        }
        if trainer.get("enable_progress_bar") is not False:
            chosen = trainer.get("callbacks") or []
            chosen = chosen if isinstance(chosen, list) else [chosen]
            defaults = self.trainer_defaults.get("callbacks") or []
            defaults = defaults if isinstance(defaults, list) else [defaults]
            if not any(isinstance(c, LightningProgressBar) for c in [*chosen, *defaults]):
                kwargs["callbacks"] = [*chosen, ProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def cleanup_after_failure(self) -> None:
        """A run that failed before saving a checkpoint leaves its run directory as it was (``RunDir.restore``),
        and says so when it removed the directory (whose name the start printed)."""
        if self._run is None or self._run.saved_checkpoint():
            return
        removed = self._run.restore()
        if removed is not None:
            print(f"lit_gen: removed the run directory {removed} (no checkpoint was saved)", file=sys.stderr)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(fit_summary(self.trainer, self.run_dir, time.monotonic() - self._started), file=sys.stderr)


def fit_summary(trainer: Trainer, run_dir: Path | None, seconds: float) -> str:
    """What a finished ``fit`` produced: its run directory, last metrics, checkpoints and the commands that
    sample from it and resume it."""
    rows: list[tuple[str, str]] = [("run directory", str(run_dir))]
    # callback_metrics also holds what callbacks evaluate (val/fid, val/modes ...), which never reach
    # logged_metrics, and the progress bar's short aliases (d_loss ...), which are left out
    evaluated = {k: v for k, v in trainer.callback_metrics.items() if k not in trainer.progress_bar_metrics}
    logged = {**evaluated, **trainer.logged_metrics}
    metrics = {
        k: float(v)
        for k, v in logged.items()
        if k not in ("epoch", "step") and (not isinstance(v, torch.Tensor) or v.numel() == 1)
    }
    if metrics:
        text = "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        lines = textwrap.wrap(text, 90, break_long_words=False)
        rows += [("last metrics" if i == 0 else "", line) for i, line in enumerate(lines)]
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint):
        if checkpoint.monitor and checkpoint.best_model_path:
            best = _shown(checkpoint.best_model_path, run_dir)
            rows.append(("best", f"{checkpoint.monitor} {float(checkpoint.best_model_score):.4g} ({best})"))
        last = last_checkpoint(checkpoint.dirpath) if checkpoint.dirpath else None
        if last is not None:
            last = _shown(last, run_dir)
            rows += [("checkpoint", last), ("sample", f"python -m lit_gen sample --ckpt_path {last}")]
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        rows.append(("resume", f"python -m lit_gen fit --config {run_dir / 'config.yaml'} --ckpt_path last"))
    head = f"lit_gen: fit ended at step {trainer.global_step} after {_duration(seconds)}"
    return "\n".join([head, *(f"  {name:<14}{value}" for name, value in rows)])


def _shown(path: str | Path, run_dir: Path | None) -> str:
    """``path`` below ``run_dir`` as the run directory was given (often relative), else as it is."""
    if run_dir is not None:
        with contextlib.suppress(ValueError):
            return str(run_dir / Path(path).absolute().relative_to(run_dir.absolute()))
    return str(path)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def top_level_help() -> str:
    """``python -m lit_gen --help``."""
    return "\n".join(
        [
            "usage: python -m lit_gen COMMAND [options]",
            "",
            "commands:",
            *(f"  {name:<10}{text}" for name, text in COMMAND_HELP.items()),
            "",
            "python -m lit_gen COMMAND --help lists a command's options.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m lit_gen`` and the ``lit_gen`` script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["-h"], ["--help"]):
        print(top_level_help())
        return
    try:
        if args and args[0] in EXTRA_COMMANDS:
            set_threads(None)
            importlib.import_module(EXTRA_COMMANDS[args[0]]).main(args[1:])
        else:
            LitGenCLI(args=None if argv is None else args)
    except LitGenError as err:
        fail(str(err))
    except ArgumentError as err:
        user_error = user_error_in(err)
        message = (
            str(user_error) if user_error else name_bad_config_file(args, summarize_parse_error(str(err)))
        )
        if message.startswith("argument subcommand: invalid choice"):  # Lightning's list lacks ours
            commands = ", ".join(["fit", "validate", "test", "predict", *EXTRA_COMMANDS])
            message = re.sub(r"\(choose from [^)]*\)", f"(choose from {commands})", message)
        fail(message)
    except MisconfigurationException as err:  # Lightning's word for a user mistake, e.g. `validate` on a GAN
        fail(str(err))
    except (ValueError, TypeError, RuntimeError) as err:
        user_error = user_error_in(err)
        if user_error is None:
            raise
        fail(str(user_error))
    except KeyboardInterrupt:
        print("lit_gen: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
