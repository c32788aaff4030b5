"""The benchmark scripts under experiments/ run end to end (tiny settings; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
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


@pytest.mark.slow
def test_diffusion_toy_quick_scores_samplers_against_nfe_and_the_grid_likelihood(tmp_path):
    diffusion_toy = _load(ROOT / "experiments" / "diffusion_toy" / "run.py")
    results = tmp_path / "results.jsonl"
    diffusion_toy.main(
        ["--quick", "--configs", "fm_grid", "--results", str(results), "--run-root", str(tmp_path)]
    )
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["config"] == "fm_grid" and row["batches"] == 40 and row["nfe"] == 15
    assert row["train_cpu_seconds"] > 0 and (tmp_path / "fm_grid-seed0").is_dir()
    assert set(row["curves"]) == {"FlowEuler", "FlowHeun"}
    # each sampler's NFE as run, never above the asked 1, 2, 4, ..., 64 (Heun: 2 * steps - 1)
    assert [p["nfe"] for p in row["curves"]["FlowEuler"]] == [1, 2, 4, 8, 16, 32, 64]
    assert [p["nfe"] for p in row["curves"]["FlowHeun"]] == [1, 3, 7, 15, 31, 63]
    assert all(0.0 <= p["high_quality"] <= 100.0 for points in row["curves"].values() for p in points)
    assert math.isfinite(row["nll_gap"]) and row["nll_gap"] == row["model_nll"] - row["true_nll"]
    assert diffusion_toy.current([row]) == [] and diffusion_toy.current([row], row["extra_args"]) == [row]
    assert "`configs/fm_toy_grid.yaml` | 1 | FlowHeun (15) |" in diffusion_toy.table([row])
    diffusion_toy.plot([row], tmp_path / "nfe.png")
    assert (tmp_path / "nfe.png").stat().st_size > 0


def test_diffusion_toy_true_mixture_log_density_matches_torch_distributions():
    diffusion_toy = _load(ROOT / "experiments" / "diffusion_toy" / "run.py")
    modes, std = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 4.0]]), 0.3
    x = torch.randn(50, 2) * 2
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(3)),
        torch.distributions.Independent(torch.distributions.Normal(modes, std), 1),
    )
    torch.testing.assert_close(diffusion_toy.mixture_log_prob(x, modes, std).float(), mixture.log_prob(x))


@pytest.mark.parametrize("case, config", [("toy", "toy_grid.yaml"), ("diffusion", "diffusion.yaml")])
def test_overhead_script_times_both_sides(tmp_path, capsys, case, config):
    overhead = _load(ROOT / "experiments" / "overhead" / "run.py")
    overhead.main(
        ["--cases", case, "--repeats", "1", "--warmup", "2", "--iters", "3", "--run-root", str(tmp_path)]
        + ["--", "--trainer.logger", "false"]
    )
    out = capsys.readouterr().out
    (result,) = json.loads(out.strip().splitlines()[-1])
    batch_size = yaml.safe_load((ROOT / "configs" / config).read_text())["data"]["init_args"]["batch_size"]
    assert result["case"] == case and result["batch_size"] == batch_size
    for kind in ("wall", "cpu"):
        assert result[kind]["lit_gen_ms"] > 0 and result[kind]["plain_ms"] > 0 and result[kind]["ratio"] > 0
    assert f"| {case} | `configs/{config}` | {batch_size} | cpu |" in out


@pytest.mark.slow
def test_diffusion_digits_clock_splits_a_fit_and_stops_it_at_a_training_cpu_budget(tmp_path, monkeypatch):
    diffusion_digits = _load(ROOT / "experiments" / "diffusion_digits" / "run.py")
    monkeypatch.setenv("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    unlimited = ["--trainer.max_steps", "-1", "--trainer.max_epochs", "-1", "--trainer.logger", "false"]
    clock = diffusion_digits.CPUClock(budget=1.0, snapshot_at=0.5)
    cli, seconds = diffusion_digits.fit("gan", str(tmp_path), unlimited, clock)
    # stopped by the budget, not a limit; the GAN quickstart's end-of-fit evaluation counts as monitoring
    assert seconds["batches"] > 0 and seconds["training_cpu_s"] >= 1.0 and seconds["monitoring_cpu_s"] > 0
    parts = seconds["setup_cpu_s"] + seconds["training_cpu_s"] + seconds["monitoring_cpu_s"]
    assert abs(parts - seconds["fit_cpu_s"]) <= 0.2
    assert clock.snapshot is not None and 0 < clock.snapshot_batches <= seconds["batches"]
    assert diffusion_digits.quickstart_eval(seconds["run_dir"])["num_fake"] == 1000


@pytest.mark.parametrize("path, net", [("edm", "every_layer"), ("fm", "concat")])
def test_diffusion_toy_explore_scores_every_sampler_of_one_probe(tmp_path, path, net):
    explore = _load(ROOT / "experiments" / "diffusion_toy" / "explore.py")
    results = tmp_path / "explore.jsonl"
    argv = ["--path", path, "--net", net, "--steps", "3", "--width", "8", "--data", "ring"]
    explore.main(argv + ["--results", str(results)])
    (line,) = results.read_text().splitlines()
    result = json.loads(line)
    assert result["settings"]["path"] == path and set(result["samplers"]) == set(explore.SAMPLERS)
    for high_quality, modes in result["samplers"].values():
        assert 0 <= high_quality <= 100 and 0 <= modes <= 8
