"""Shared test fixtures: in-process and subprocess CLI runners, paths, offline W&B."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
#: small real data shipped with the tests (tests/data/README.md): an MNIST subset, a Tiny Shakespeare excerpt
TEST_DATA = ROOT / "tests" / "data"
#: 40,122 characters of Tiny Shakespeare holding all 65 of its characters (the GPT configs' vocabulary)
SHAKESPEARE_EXCERPT = TEST_DATA / "text" / "tinyshakespeare_excerpt.txt"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
# One intra-op thread per test process (set before torch is imported; inherited by subprocesses): the tests'
# tensors are tiny, and on a busy machine OpenMP threads spinning for a core made them up to 30x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning  # noqa: E402, F401  (its console log handler binds to the session's stderr, not a test's)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so run directories and downloads never leak."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("LIT_GEN_RUN_DIR", raising=False)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


#: loggers that get a console handler when their package is imported (bound to the sys.stderr of that moment)
_CONSOLE_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics")


@contextlib.contextmanager
def _console_logs_to(stream) -> Iterator[None]:
    """Points the libraries' console log handlers at ``stream`` (the test's captured stderr) for a while. Left
    alone they keep writing to the stream captured when the library was first imported — in-process that may be
    an earlier test's, already closed ("--- Logging error --- Traceback ..." in later tests' stderr)."""
    handlers = [
        h
        for name in _CONSOLE_LOGGERS
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


@pytest.fixture
def cli(capsys):
    """Runs ``python -m lit_gen ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from lit_gen.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            with _console_logs_to(sys.stderr):
                main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli_subprocess(tmp_path):
    """Runs ``python -m lit_gen ARGS`` in a fresh interpreter (needed for DDP); returns CompletedProcess."""

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("LIT_GEN_RUN_DIR", None)
        return subprocess.run(
            [sys.executable, "-m", "lit_gen", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=tmp_path,
        )

    return run


def run_dirs(root: Path | str = "runs") -> list[Path]:
    """Run directories (folders holding config.yaml or checkpoints) below ``root``."""
    root = Path(root)
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []


# --- small on-disk datasets (writers in tests/fixtures.py), built once per test session -------------------------


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A ``data_dir`` for ``lit_gen.data.MNIST`` holding 1,000 real MNIST test digits (as train and test split)."""
    from fixtures import write_mnist

    return write_mnist(tmp_path_factory.mktemp("mnist"), TEST_DATA / "mnist")


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """A ``data_dir`` for ``lit_gen.data.CIFAR10`` with a tiny fake CIFAR-10 (use with ``cifar10_skip_md5``)."""
    from fixtures import write_cifar10

    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture
def cifar10_skip_md5(monkeypatch):
    """Makes torchvision's CIFAR-10 check that its files exist without comparing them to the real archive's
    MD5 sums (which no small fake can match). In-process only: use the ``cli`` fixture, not a subprocess."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of 20 small PNGs (assorted sizes and colour modes, nested folders) for ``ImageFolder``."""
    from fixtures import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("images"))
