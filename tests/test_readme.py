"""The README stays a user's guide: short, listing every config, with the set-up commands CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 350


def test_readme_is_at_most_350_lines():
    lines = len(README.splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; measurements belong in experiments/*/README.md"


def test_readme_configs_table_lists_every_config():
    section = README.split("\n## Configs", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(configs/[\w./]+\.yaml)` \|", section, flags=re.M))
    shipped = {f"configs/{path.name}" for path in (ROOT / "configs").glob("*.yaml")}
    assert listed == shipped


def test_readme_test_command_is_the_one_ci_runs():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"\n{ci_command}\n" in README


def test_readme_links_point_at_existing_files():
    for target in re.findall(r"\]\(((?!https?:|#)[^)]+)\)", README):
        assert (ROOT / target).exists(), target
