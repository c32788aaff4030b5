"""The ``python -m lit_gen`` command line: Lightning's CLI for fit/validate/test/predict, plus the extra
subcommands ``sample``, ``evaluate``, ``submit`` and ``compare`` (each in ``lit_gen/commands/``).

Every run gets its own directory, ``{run.root}/{run.name}/{YYYYmmdd-HHMMSS}`` (``slurm-{job id}`` inside a
SLURM job, so a requeued job finds its own checkpoints), holding ``config.yaml`` (the resolved config),
``checkpoints/``, ``samples/`` and the loggers' files. Re-running with a run's own ``config.yaml`` reuses its
directory, so ``fit --config runs/.../config.yaml --ckpt_path last`` resumes it.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_gen.callbacks.progress import ProgressBar
from lit_gen.callbacks.reliability import Checkpoint, NonFiniteGuard
from lit_gen.callbacks.slurm import SLURMRequeue
from lit_gen.checkpoints import read_checkpoint
from lit_gen.errors import LitGenError

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
    run's copy), instead of into a logger's version folder."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            self.parser.save(self.config, str(tmp), skip_none=False, overwrite=True, multifile=False)
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


class LitGenCLI(LightningCLI):
    """LightningCLI with per-run directories, a forced ``ModelCheckpoint`` (``--checkpoint.*``) that keeps
    ``last.ckpt``, optimizers injected into the model from YAML (``auto_configure_optimizers=False``) and
    parse errors raised (not printed) so that ``main`` can report them in one line."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        trainer_defaults = kwargs.setdefault("trainer_defaults", {})
        # SLURM auto-requeue saves its checkpoint between batches (a no-op outside SLURM)
        trainer_defaults["callbacks"] = [*trainer_defaults.get("callbacks", []), SLURMRequeue()]
        self.run_dir: Path | None = None
        self._claimed_run_dir = False
        inherited_run_dir = os.environ.get(RUN_DIR_ENV)
        try:
            super().__init__(**kwargs)
        except BaseException:
            self.cleanup_after_failure()
            raise
        else:
            self.cleanup_after_success()
        finally:
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
        """``--ckpt_path FILE`` must be a readable checkpoint (one-line error otherwise, loaded with
        ``weights_only``). Unlike LightningCLI, the hyper-parameters stored in the checkpoint do not override
        the config: the run's ``config.yaml`` and the command line decide the model, and the keys where the
        checkpoint differs are named in a warning. A checkpoint of another model class is an error."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc") or "://" in str(ckpt_path):
            return
        checkpoint = read_checkpoint(ckpt_path)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        stored_class = hparams.pop("_class_path", None)
        model = self.config[subcommand].get("model")
        if stored_class is None or not isinstance(model, Namespace):
            return
        if stored_class != model.get("class_path"):
            raise LitGenError(
                f"ckpt_path: '{ckpt_path}' holds a {stored_class}, but the config's model is "
                f"{model.get('class_path')}"
            )
        current = _plain(model.get("init_args")) or {}
        differing = sorted(k for k in hparams.keys() & current.keys() if _plain(hparams[k]) != current[k])
        if differing:
            warnings.warn(
                f"--ckpt_path {ckpt_path}: the config's model.init_args differ from the checkpoint's in "
                f"{', '.join(differing)}; the config's values are used",
                stacklevel=2,
            )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
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
        if config.run.dir:
            self.run_dir = Path(config.run.dir)
        elif os.environ.get(RUN_DIR_ENV):
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
        else:
            self.run_dir = new_run_dir(config.run.root, self._run_name(config))
            self._claimed_run_dir = True
        os.environ[RUN_DIR_ENV] = str(self.run_dir)
        config.run.dir = str(self.run_dir)
        # a config saved by an earlier run holds paths inside that run's directory: they move with the run
        previous = config.trainer.default_root_dir
        if previous and Path(previous) != self.run_dir:
            config.checkpoint.dirpath = _moved(config.checkpoint.dirpath, Path(previous), self.run_dir)
            for logger in _logger_configs(config):
                save_dir = logger.init_args.get("save_dir")
                logger.init_args.save_dir = _moved(save_dir, Path(previous), self.run_dir)
        config.trainer.default_root_dir = str(self.run_dir)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=str(self.run_dir), name="csv", version=""),
            )
        for logger in _logger_configs(config):  # loggers that set no save_dir write into the run directory
            if logger.init_args.get("save_dir") in (None, "", ".", RUN_DIR_PLACEHOLDER):
                logger.init_args.save_dir = str(self.run_dir)
        # the configs share one logger block (configs/shared/loggers.yaml): each config's own tags are run.tags
        for logger in _logger_configs(config):
            if config.run.tags and "tags" in logger.init_args:
                tags = [*(logger.init_args.tags or []), *config.run.tags]
                logger.init_args.tags = list(dict.fromkeys(tags))
        if self._claimed_run_dir:
            print(f"lit_gen: run directory {self.run_dir}", file=sys.stderr)

    def cleanup_after_failure(self) -> None:
        """Removes a run directory this process created when the run failed before saving any checkpoint."""
        if self.run_dir is None or not self._claimed_run_dir or not self.run_dir.exists():
            return
        if not any(self.run_dir.rglob("*.ckpt")):
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._remove_empty_parents()
            # the start of the run named this directory (and a W&B offline folder in it to sync): say it is gone
            print(
                f"lit_gen: removed the run directory {self.run_dir} (no checkpoint was saved)",
                file=sys.stderr,
            )

    def _remove_empty_parents(self) -> None:
        for parent in (self.run_dir.parent, self.run_dir.parent.parent):
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break

    def cleanup_after_success(self) -> None:
        """Removes the run directory when nothing was written into it (e.g. ``fast_dev_run``)."""
        if self.run_dir is not None and self._claimed_run_dir and self.run_dir.is_dir():
            if not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
                self._remove_empty_parents()


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m lit_gen`` and the ``lit_gen`` script."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args and args[0] in EXTRA_COMMANDS:
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
