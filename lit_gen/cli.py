"""The ``python -m lit_gen`` command line: Lightning's CLI for fit/validate/test/predict, plus the extra
subcommands ``sample``, ``evaluate``, ``submit`` and ``compare`` (each in ``lit_gen/commands/``).

Every run gets its own directory, ``{run.root}/{run.name}/{YYYYmmdd-HHMMSS}`` (``slurm-{job id}`` inside a
SLURM job, so a requeued job finds its own checkpoints), holding ``config.yaml`` (the resolved config),
``checkpoints/``, ``samples/`` and the loggers' files. Re-running with a run's own ``config.yaml`` reuses its
directory, so ``fit --config runs/.../config.yaml --ckpt_path last`` resumes it. A run directory holds one run
at a time (a lock), and a start that fails before a checkpoint leaves it as it was.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import shutil
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_gen.callbacks.progress import ProgressBar
from lit_gen.callbacks.reliability import Checkpoint, NonFiniteGuard
from lit_gen.callbacks.slurm import SLURMRequeue
from lit_gen.checkpoints import newest_checkpoint, read_checkpoint
from lit_gen.errors import LitGenError
from lit_gen.loggers import ContinueLogs

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: subcommands that are not Trainer methods: name -> module with a ``main(argv)`` function
EXTRA_COMMANDS = {
    "sample": "lit_gen.commands.sample",
    "evaluate": "lit_gen.commands.evaluate",
    "submit": "lit_gen.commands.submit",
    "compare": "lit_gen.commands.compare",
}

#: set by the process that chooses a run directory, inherited by the DDP processes Lightning launches
RUN_DIR_ENV = "LIT_GEN_RUN_DIR"


def slurm_job_tag() -> str | None:
    """``{array job}_{task}`` or ``{job}`` inside a SLURM job (stable across requeues), else None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


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


def new_run_dir(root: str | Path, name: str) -> Path:
    """Claims a fresh run directory (created here, so two runs started in the same second never collide)."""
    parent = Path(root) / name
    try:
        job = slurm_job_tag()
        if job:  # a requeued job must land in the same directory
            path = parent / f"slurm-{job}"
            path.mkdir(parents=True, exist_ok=True)
            return path
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            path = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:  # read-only or full file system, a file in the way
        raise LitGenError(
            f"run.root: cannot create a run directory under '{parent}' ({err.strerror or err})"
        ) from None
    raise LitGenError(f"run.root: could not create a new run directory under '{parent}'")


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


class RunDirLock:
    """Keeps other lit_gen processes out of a run directory while a run uses it: an exclusive ``flock`` on
    ``<run dir>/.lit_gen.lock`` (holding the process id), dropped by the OS if the process dies and removed when
    the run ends. Two runs writing into one directory would interleave their logs and share a W&B run."""

    NAME = ".lit_gen.lock"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.NAME
        self._file = None

    def acquire(self) -> None:
        if fcntl is None:  # no flock (Windows): unlocked
            return
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.seek(0)
                holder = file.read().strip() or "?"
                file.close()
                raise LitGenError(
                    f"run.dir: '{self.run_dir}' is in use by another lit_gen run (process {holder}); "
                    "wait for it to end or choose another run directory"
                ) from None
            # the holder may have removed the file between our open and flock: lock the file now at the path
            try:
                if os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            file.close()
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None


def _process_rank() -> int:
    """This process's rank when a launcher (``srun``, ``torchrun``) started several, else 0."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


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


class LitGenCLI(LightningCLI):
    """LightningCLI with per-run directories (one run at a time in each), a forced ``ModelCheckpoint``
    (``--checkpoint.*``) that keeps ``last.ckpt``, optimizers injected into the model from YAML
    (``auto_configure_optimizers=False``), ``--threads``, a quiet console with a summary at the end of ``fit``,
    and parse errors raised (not printed) so that ``main`` can report them in one line."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        trainer_defaults = kwargs.setdefault("trainer_defaults", {})
        # SLURM auto-requeue saves its checkpoint between batches (a no-op outside SLURM); a resumed run
        # continues its CSV log
        trainer_defaults["callbacks"] = [
            *trainer_defaults.get("callbacks", []),
            SLURMRequeue(),
            ContinueLogs(),
        ]
        self.run_dir: Path | None = None
        inherited_run_dir = os.environ.get(RUN_DIR_ENV)
        # the first process of a run owns its directory (lock, messages, clean-up); the DDP processes it
        # launches inherit the directory, and srun's other tasks have a rank > 0
        self._owner = inherited_run_dir is None and _process_rank() == 0
        self._claimed_run_dir = False
        self._created: Path | None = None  # the top-most folder this run created for its directory
        self._before: dict[Path, int] = {}  # what an existing run directory held before this run (mtimes)
        self._backups: dict[Path, bytes] = {}  # contents of its small top-level files
        self._lock: RunDirLock | None = None
        self._started = time.monotonic()
        try:
            with quiet_lightning():
                super().__init__(**kwargs)
        except BaseException:
            self.cleanup_after_failure()
            raise
        else:
            self.cleanup_after_success()
        finally:
            if self._lock is not None:
                self._lock.release()
            if inherited_run_dir is None:  # in-process callers (tests) start each run afresh
                os.environ.pop(RUN_DIR_ENV, None)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses like LightningCLI, but a logger given without ``save_dir`` (``--trainer.logger=CSVLogger``)
        is valid: it gets the run directory in ``before_instantiate_classes``. ``--key=None`` means null, as
        a W&B sweep agent writes a null parameter value."""
        if isinstance(args, (dict, Namespace)):
            return super().parse_arguments(parser, args)
        if args is not None:
            args = [f"{a[:-5]}=null" if a.startswith("--") and a.endswith("=None") else a for a in args]
        self.config = parser.parse_args(args, _skip_validation=True)
        for logger in _logger_configs(self.config.get(str(self.config.get("subcommand")))):
            if logger.init_args.get("save_dir") in (None, ""):
                logger.init_args.save_dir = RUN_DIR_PLACEHOLDER
        try:
            parser.validate(self.config)
        except (TypeError, KeyError, ValueError) as err:
            parser.error(str(err), err)

    def _parse_ckpt_path(self) -> None:
        """Unlike LightningCLI, the hyper-parameters stored in a checkpoint do not override the config: the
        run's ``config.yaml`` and the command line decide the model (``check_resume`` compares the two once
        the run directory, and so the checkpoint ``last`` means, is known)."""

    def check_resume(self, config: Namespace, ckpt_path: Path) -> None:
        """``ckpt_path`` must be a readable checkpoint (one-line error otherwise, loaded with ``weights_only``)
        of the config's model class. Resuming restores the optimizers' and LR schedulers' states, so settings of
        theirs that differ from the checkpoint's would not be used, while ``config.yaml`` would claim they were:
        that is an error naming them. Other differing ``model.init_args`` are used, and named in a warning."""
        checkpoint = read_checkpoint(ckpt_path)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        stored_class = hparams.pop("_class_path", None)
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
                line
                for k in restored
                for line in _differing_leaves(_plain(hparams[k]), current[k], f"model.{k}")
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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """The progress bar is ``lit_gen.callbacks.ProgressBar`` (redrawn at most twice a second) unless the
        config chose one or turned it off."""
        if config.get("enable_progress_bar") is not False:
            chosen = config.get("callbacks") or []
            chosen = [*(chosen if isinstance(chosen, list) else [chosen]), *callbacks]
            defaults = self.trainer_defaults.get("callbacks") or []
            chosen += defaults if isinstance(defaults, list) else [defaults]
            if not any(isinstance(c, LightningProgressBar) for c in chosen):
                callbacks = [*callbacks, ProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

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

    # --- run directory ---------------------------------------------------------------------------------------

    def _run_name(self, config: Namespace) -> str:
        if config.run.name:
            return config.run.name
        files = config.get("config") or []
        if files:
            return Path(str(files[-1])).stem
        model = config.get("model")
        class_path = model.get("class_path", "run") if isinstance(model, Namespace) else "run"
        return class_path.rsplit(".", 1)[-1].lower()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        set_threads(config.get("threads"))
        if self.subcommand == "fit":
            for key in ("max_steps", "max_epochs"):
                if config.trainer.get(key) == 0:
                    raise LitGenError(f"trainer.{key}: 0 trains nothing (-1 or null: no limit)")
        job = slurm_job_tag()
        if config.run.dir:
            run_dir = Path(config.run.dir)
        elif os.environ.get(RUN_DIR_ENV):
            run_dir = Path(os.environ[RUN_DIR_ENV])
        elif job:  # a requeued job must land in the same directory
            run_dir = Path(config.run.root) / self._run_name(config) / f"slurm-{job}"
        else:
            run_dir = None  # a new one, claimed once the arguments are known to be good
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            if run_dir is None:
                raise LitGenError(
                    "ckpt_path: 'last' resumes a run: give the run's own config (--config "
                    "runs/<name>/<run>/config.yaml) or its directory (--run.dir)"
                )
            self._use_run_dir(config, run_dir)
            found = last_checkpoint(config.checkpoint.dirpath)
            if found is None and not job:  # inside SLURM, `last` may be set before the first checkpoint
                raise LitGenError(f"ckpt_path: 'last': no last checkpoint in '{config.checkpoint.dirpath}'")
            if found is not None:
                self.check_resume(config, found)
                # resuming in place: of course the run's checkpoint directory holds checkpoints
                warnings.filterwarnings(
                    "ignore", message=r".*Checkpoint directory .* exists and is not empty"
                )
        elif ckpt_path and str(ckpt_path) not in ("best", "hpc") and "://" not in str(ckpt_path):
            self.check_resume(config, Path(ckpt_path))
        if run_dir is None:
            run_dir = new_run_dir(config.run.root, self._run_name(config))
            self._claimed_run_dir, self._created = True, run_dir
        elif self._owner:
            self._take_existing(run_dir)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
        self._use_run_dir(config, run_dir)
        if self._owner:
            self._lock = RunDirLock(run_dir)
            self._lock.acquire()
            print(f"lit_gen: run directory {run_dir}", file=sys.stderr)

    def _take_existing(self, run_dir: Path) -> None:
        """Notes what a run directory holds before this run (creating it if it is new), so that a failed start
        can leave it as it was."""
        if not run_dir.exists():
            created = run_dir.absolute()
            while not created.parent.exists():
                created = created.parent
            run_dir.mkdir(parents=True)
            self._created = created
            return
        self._before = {p: p.lstat().st_mtime_ns for p in run_dir.rglob("*")}
        for path in run_dir.iterdir():
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= 1 << 20:
                self._backups[path] = path.read_bytes()

    def _use_run_dir(self, config: Namespace, run_dir: Path) -> None:
        """Points the config's paths (checkpoints, loggers) into ``run_dir``."""
        self.run_dir = run_dir
        os.environ[RUN_DIR_ENV] = str(run_dir)
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

    def cleanup_after_failure(self) -> None:
        """A run that failed before saving a checkpoint leaves its run directory as it was: removed if this run
        created it, else without the files this run added and with its top-level files as they were."""
        if not self._owner or self.run_dir is None or not self.run_dir.exists():
            return
        if any(self._before.get(p) != p.lstat().st_mtime_ns for p in self.run_dir.rglob("*.ckpt")):
            return  # it saved a checkpoint: keep what it wrote
        if self._created is not None:
            shutil.rmtree(self._created, ignore_errors=True)
            if self._claimed_run_dir:
                self._remove_empty_parents()
            # the start of the run named this directory (and a W&B offline folder in it to sync): say it is gone
            print(
                f"lit_gen: removed the run directory {self._created} (no checkpoint was saved)",
                file=sys.stderr,
            )
            return
        keep = {self.run_dir / RunDirLock.NAME}
        for path in sorted(set(self.run_dir.rglob("*")) - self._before.keys() - keep, reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, content in self._backups.items():
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)

    def _remove_empty_parents(self) -> None:
        for parent in (self.run_dir.parent, self.run_dir.parent.parent):
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break

    def cleanup_after_success(self) -> None:
        """Removes the run directory when nothing was written into it (e.g. ``fast_dev_run``)."""
        if self.run_dir is not None and self._claimed_run_dir and self.run_dir.is_dir():
            if not any(p.name != RunDirLock.NAME for p in self.run_dir.iterdir()):
                if self._lock is not None:
                    self._lock.release()
                self.run_dir.rmdir()
                self._remove_empty_parents()

    # --- the end of a fit ------------------------------------------------------------------------------------

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


def _moved(path: str | None, old_root: Path, new_root: Path) -> str | None:
    """``path`` re-rooted from ``old_root`` to ``new_root`` when it lies inside ``old_root``; else unchanged."""
    if not path:
        return path
    try:
        return str(new_root / Path(path).relative_to(old_root))
    except ValueError:
        return path


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


_NOISE_PREFIXES = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value",
)


#: a key whose value names a config file that is not there (e.g. ``trainer.logger: shared/loggers.yaml``)
_MISSING_SUBCONFIG = re.compile(
    r'Parser key "([^"]+)":.*?Expected a path but (\S+\.(?:ya?ml|json)) either not accessible', re.DOTALL
)


def summarize_parse_error(message: str) -> str:
    """One line from a jsonargparse message: the key it names and its most specific complaints, without the
    Union/NoneType boilerplate."""
    missing = _MISSING_SUBCONFIG.match(str(message))
    if missing:
        key, path = missing.groups()
        return f"{key}: no file '{path}' (a relative path in a config file is relative to that file's folder)"
    lines = [line.strip().lstrip("- ").strip() for line in str(message).splitlines()]
    lines = [line for line in lines if line and not line.startswith(_NOISE_PREFIXES)]
    lines = [line for line in lines if line != "Expected a <class 'NoneType'>"]
    text = " ".join(lines)
    return text if len(text) <= 400 else text[:397] + "..."


def name_bad_config_file(args: list[str], message: str) -> str:
    """jsonargparse reports a config file that is not valid YAML without naming it: prefixes the message with
    the first ``--config`` file that YAML cannot parse."""
    if not message.startswith("Problems parsing config"):
        return message
    import yaml

    paths = [b for a, b in zip(args, args[1:]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        try:
            yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            detail = message.replace(' in "<unicode string>"', "")
            return f"config: '{path}': {detail}"
    return message


def user_error_in(err: BaseException) -> LitGenError | None:
    """The LitGenError behind ``err`` (jsonargparse wraps errors raised while instantiating classes)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LitGenError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def fail(message: str, code: int = 2) -> None:
    """Prints ``lit_gen: error: <message>`` on one line to stderr and exits with ``code``."""
    print(f"lit_gen: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


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
