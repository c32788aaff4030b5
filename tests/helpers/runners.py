"""``python -m lit_gen`` run from a test: in-process or in a fresh interpreter, and what Lightning logs."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .configs import write_config
from .paths import ROOT, TESTS
from .runs import run_dirs

#: loggers that get a console handler when their package is imported (bound to the sys.stderr of that moment)
CONSOLE_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics")


def run(*args: object) -> None:
    """``python -m lit_gen ARGS`` in-process; fails the test on a non-zero exit."""
    from lit_gen.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"lit_gen {' '.join(map(str, args))} exited with {exit_.code}"


def run_in_process(*args: object) -> int:
    """``python -m lit_gen ARGS`` in-process with the libraries' console logs on the current ``sys.stderr``;
    returns the exit code (exceptions other than ``SystemExit`` propagate)."""
    from lit_gen.cli import main

    try:
        with console_logs_to(sys.stderr):
            main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m lit_gen`` subprocess: this checkout's ``lit_gen`` and the test
    ``helpers`` (class paths such as ``helpers.callbacks.Gate``) importable, no run directory inherited."""
    env = {key: value for key, value in os.environ.items() if key != "LIT_GEN_RUN_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


@contextlib.contextmanager
def console_logs_to(stream) -> Iterator[None]:
    """Points the libraries' console log handlers at ``stream`` (the test's captured stderr) for a while. Left
    alone they keep writing to the stream captured when the library was first imported — in-process that may be
    an earlier test's, already closed ("--- Logging error --- Traceback ..." in later tests' stderr)."""
    handlers = [
        h
        for name in CONSOLE_LOGGERS
        for h in logging.getLogger(name).handlers
        if type(h) is logging.StreamHandler
    ]
    previous = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous):
            handler.setStream(old)


@contextlib.contextmanager
def lightning_log() -> Iterator[list[str]]:
    """The messages Lightning logs (``rank_zero_info``) inside the block."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch")  # it does not propagate to "lightning"
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def fit_in(folder: Path, name: str, text: str) -> Path:
    """Trains the tiny config ``text`` (saved as ``{name}.yaml``) in ``folder``; returns the run directory."""
    from lit_gen.cli import main

    previous = Path.cwd()
    os.chdir(folder)
    try:
        write_config(Path(f"{name}.yaml"), text)
        main(["fit", "--config", f"{name}.yaml"])
        (run,) = run_dirs(folder / "runs")
        return run
    finally:
        os.chdir(previous)
