"""Shared test fixtures: in-process and subprocess CLI runners, paths, offline W&B."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
#: real data for tests and benchmarks only (MNIST test set, Tiny Shakespeare); users never need it
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")


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
    from lit_gen.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
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
