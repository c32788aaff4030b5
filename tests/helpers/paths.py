"""The checkout's folders and the small real data shipped with the tests (tests/data/README.md)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CONFIGS = ROOT / "configs"
#: small real data shipped with the tests: an MNIST subset, a Tiny Shakespeare excerpt
TEST_DATA = TESTS / "data"
#: 40,122 characters of Tiny Shakespeare holding all 65 of its characters (the GPT configs' vocabulary)
SHAKESPEARE_EXCERPT = TEST_DATA / "text" / "tinyshakespeare_excerpt.txt"
#: the test SLURM cluster's start and stop scripts and the tiny GAN its jobs train
SLURM_FILES = TESTS / "slurm"
