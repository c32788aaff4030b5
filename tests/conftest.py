"""The tests' pytest fixtures and session setup (offline W&B, one thread); shared code is in ``helpers``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
# One intra-op thread per test process (set before torch is imported; inherited by subprocesses): the tests'
# tensors are tiny, and on a busy machine OpenMP threads spinning for a core made them up to 30x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning  # noqa: E402, F401  (its console log handler binds to the session's stderr, not a test's)
from helpers import datasets, slurm  # noqa: E402
from helpers.paths import TEST_DATA  # noqa: E402
from helpers.runners import run_in_process, subprocess_env  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so run directories and downloads never leak."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("LIT_GEN_RUN_DIR", raising=False)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def cli(capsys):
    """Runs ``python -m lit_gen ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = run_in_process(*args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli_subprocess(tmp_path):
    """Runs ``python -m lit_gen ARGS`` in a fresh interpreter (needed for DDP); returns CompletedProcess."""

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lit_gen", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=subprocess_env(PYTHONUNBUFFERED="1", **(env or {})),
            cwd=tmp_path,
        )

    return run


# --- small on-disk datasets (writers in helpers/datasets.py), built once per test session -----------------------


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A ``data_dir`` for ``lit_gen.data.MNIST`` holding 1,000 real MNIST test digits (as train and test split)."""
    return datasets.write_mnist(tmp_path_factory.mktemp("mnist"), TEST_DATA / "mnist")


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """A ``data_dir`` for ``lit_gen.data.CIFAR10`` with a tiny fake CIFAR-10 (use with ``cifar10_skip_md5``)."""
    return datasets.write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture
def cifar10_skip_md5(monkeypatch):
    """Makes torchvision's CIFAR-10 check that its files exist without comparing them to the real archive's
    MD5 sums (which no small fake can match). In-process only: use the ``cli`` fixture, not a subprocess."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of 20 small PNGs (assorted sizes and colour modes, nested folders) for ``ImageFolder``."""
    return datasets.write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running test SLURM cluster (``helpers.slurm``): started unless one is up, stopped if started here."""
    started = slurm.start_cluster()
    yield
    if started:
        slurm.stop_cluster()
