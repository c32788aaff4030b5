"""DDP for real: ``python -m lit_gen fit --trainer.strategy ddp`` with 2 CPU processes (gloo), launched side by side,
the single-process runs they are compared with, and what their run directories must hold."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import torch

from .runners import run, subprocess_env
from .runs import differences, last_checkpoint

#: the trainer settings of the DDP test configs (``max_steps`` to fill in); their data's ``batch_size`` is the
#: global batch and is written ``batch_size: N}`` (``ddp_command`` halves it)
COMMON = """
seed_everything: 7
trainer:
  accelerator: cpu
  devices: 1
  max_steps: {max_steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  limit_val_batches: 0
"""


def ddp_command(config: Path, root: Path) -> list[str]:
    """Two DDP processes with half the config's batch each."""
    batch = int(config.read_text().split("batch_size: ")[1].split("}")[0])
    batch_key = (
        "--data.init_args.images.init_args.batch_size"
        if "PixelTokens" in config.read_text()
        else ("--data.init_args.batch_size")
    )
    return [
        sys.executable, "-m", "lit_gen", "fit", "--config", str(config), "--run.root", str(root),
        "--trainer.devices", "2", "--trainer.strategy", "ddp", batch_key, str(batch // 2),
    ]  # fmt: skip


def ddp_and_single_runs(
    folder: Path, ddp: dict[str, str], single: dict[str, str], resumed: dict[str, int]
) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Fits in ``folder``: the DDP run of each config in ``ddp`` (name -> config text), launched side by side, into
    ``<name>/ddp``; meanwhile the single-process run of each config in ``single`` (name -> config text, the whole
    batch) in-process into ``<name>/single``; then each run in ``resumed`` (name -> step) resumed under DDP from
    its DDP run's checkpoint of that step, into ``<name>/resumed``. Returns name -> (``folder/<name>``, the DDP
    process) and ``<name>_resumed`` -> (the same folder, the resumed process)."""
    env = subprocess_env(PYTHONUNBUFFERED="1")  # the DDP processes import helpers.callbacks

    def launch(command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=folder
        )

    def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
        out, err = process.communicate(timeout=600)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    launched = {}
    for name, text in ddp.items():
        config = folder / f"{name}.yaml"
        config.write_text(text)
        # a resumed run keeps its halfway checkpoint (the state a run stopped there saves) to resume from
        keep = (
            ["--checkpoint.every_n_train_steps", str(resumed[name]), "--checkpoint.save_top_k", "-1"]
            if name in resumed
            else []
        )
        launched[name] = launch([*ddp_command(config, folder / name / "ddp"), *keep])
    for name, text in single.items():
        (folder / f"{name}-single.yaml").write_text(text)
        run("fit", "--config", folder / f"{name}-single.yaml", "--run.root", folder / name / "single")
    results = {name: (folder / name, finish(process)) for name, process in launched.items()}
    restarted = {}
    for name, step in resumed.items():
        halfway = list((folder / name / "ddp").glob(f"*/*/checkpoints/epoch=*-step={step}.ckpt"))
        if name in ddp and len(halfway) == 1:
            command = ddp_command(folder / f"{name}.yaml", folder / name / "resumed")
            restarted[name] = launch([*command, "--ckpt_path", str(halfway[0])])
    results.update(
        {f"{name}_resumed": (folder / name, finish(process)) for name, process in restarted.items()}
    )
    return results


def assert_ran(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout


def assert_same_parameters(root: Path, atol: float) -> dict:
    """The last checkpoints of ``root/ddp`` and ``root/single`` hold the same state to float tolerance; returns the
    DDP one."""
    ddp, single = last_checkpoint(root / "ddp"), last_checkpoint(root / "single")
    assert ddp["global_step"] == single["global_step"]
    assert len(ddp["rng_states"]) == 2 and len(single["rng_states"]) == 1  # one RNG state per rank
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key], value, atol=atol, rtol=1e-5, msg=key)
    return ddp


def logged(root: Path, key: str) -> list[float]:
    """The values of ``key`` in the CSV log of the one run below ``root``."""
    (path,) = root.glob("*/*/csv/metrics.csv")
    return [float(row[key]) for row in csv.DictReader(path.open()) if row.get(key)]


def assert_same_logged(root: Path, keys: tuple[str, ...], batches: int) -> None:
    """The DDP run logged the single-process run's values of ``keys`` on each of ``batches`` batches: its
    logged losses are the mean over the ranks' half batches, the global batch's."""
    for key in keys:
        single, distributed = logged(root / "single", key), logged(root / "ddp", key)
        assert len(single) == len(distributed) == batches, key
        torch.testing.assert_close(torch.tensor(distributed), torch.tensor(single), atol=1e-6, rtol=1e-5)


def assert_resumed_bitwise(runs: dict, name: str, steps: int) -> dict:
    """The DDP run ``name`` resumed halfway ends bitwise equal to the uninterrupted one after ``steps`` steps;
    returns the latter's last checkpoint."""
    assert f"{name}_resumed" in runs, f"the {name} DDP run left no halfway checkpoint to resume from"
    root, resumed_run = runs[f"{name}_resumed"]
    assert_ran(resumed_run)
    assert "Restored all states from the checkpoint" in resumed_run.stderr + resumed_run.stdout
    whole, resumed = last_checkpoint(root / "ddp"), last_checkpoint(root / "resumed")
    assert whole["global_step"] == resumed["global_step"] == steps
    assert len(resumed["rng_states"]) == 2
    for key in ("state_dict", "optimizer_states", "rng_states", "loops"):
        assert differences(whole[key], resumed[key], key) == [], key
    return whole
