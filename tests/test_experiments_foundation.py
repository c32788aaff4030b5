"""The benchmark scripts under experiments/ run end to end (tiny settings; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from helpers.paths import ROOT


def _load(path):
    spec = importlib.util.spec_from_file_location(path.parent.name + "_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_toy_modes_quick_trains_through_the_cli_and_scores_with_the_protocol(tmp_path):
    toy_modes = _load(ROOT / "experiments" / "toy_modes" / "run.py")
    results = tmp_path / "results.jsonl"
    toy_modes.main(["--quick", "--configs", "ring", "--results", str(results), "--run-root", str(tmp_path)])
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["config"] == "ring" and row["seed"] == 0 and row["batches"] == 20
    assert 0 <= row["modes"] <= 8 and 0.0 <= row["high_quality"] <= 100.0 and row["reverse_kl"] >= 0.0
    assert (tmp_path / "ring-seed0").is_dir()
    # the README table only tabulates runs of the configs as shipped, never quick/overridden ones
    assert toy_modes.current([row]) == [] and toy_modes.current([row], row["extra_args"]) == [row]
    assert "lit_gen `configs/toy_ring.yaml` | 1 |" in toy_modes.table([row])


def test_overhead_script_times_both_sides(tmp_path, capsys):
    overhead = _load(ROOT / "experiments" / "overhead" / "run.py")
    overhead.main(
        ["--cases", "toy", "--repeats", "1", "--warmup", "2", "--iters", "3", "--run-root", str(tmp_path)]
        + ["--", "--trainer.logger", "false"]
    )
    out = capsys.readouterr().out
    (result,) = json.loads(out.strip().splitlines()[-1])
    batch_size = yaml.safe_load((ROOT / "configs" / "toy_grid.yaml").read_text())["data"]["init_args"][
        "batch_size"
    ]
    assert result["case"] == "toy" and result["batch_size"] == batch_size
    for kind in ("wall", "cpu"):
        assert result[kind]["lit_gen_ms"] > 0 and result[kind]["plain_ms"] > 0 and result[kind]["ratio"] > 0
    assert f"| toy | `configs/toy_grid.yaml` | {batch_size} | cpu |" in out
