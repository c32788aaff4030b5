"""DDP for real: 2 CPU processes (gloo) through ``python -m lit_gen fit --trainer.strategy ddp``.

One DDP launch per family (GAN, pixel GPT, VAE, and a pixel GPT with dropout), started side by side, plus DDP
runs resumed from the GAN's and the dropout GPT's halfway checkpoints, which must end bitwise equal to the
uninterrupted DDP runs; the dropout GPT's ranks must draw from different global RNG streams. After a few
batches with the same global data (each rank takes half of the single-process batch: ``ResumableSampler``
shards the same permutation) the DDP parameters must equal a single-process run with the whole batch to float
tolerance. The GAN also draws the same global latents (each rank its rows), and its logged losses are the mean
over ranks, so they equal the single-process losses; the VAE likewise draws the global batch's binarization
and reparameterization noise. The models have no BatchNorm: under DDP BatchNorm normalises each rank's half
batch with that half's statistics, which no single-process run reproduces. SGD, not Adam: Adam's first steps
move each weight by about ``lr * sign(gradient)``, which would hide gradient errors.
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.runners import run, subprocess_env
from helpers.runs import differences, last_checkpoint

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

GAN = (
    COMMON.format(max_steps=8)  # 4 batches: D, G, D, G, ...
    + """  callbacks: [{class_path: helpers.callbacks.DrawsGlobalRandom}]
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {latent_dim: 2, hidden: [16, 16], data_dim: 2}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {data_dim: 2, hidden: [16, 16]}
    ema_decay: 0.9
    generator_optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.1}
    discriminator_optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.1}
data:
  class_path: lit_gen.data.Ring
  init_args: {num_train: 256, num_val: 16, batch_size: 16}
"""
)

GPT = (
    COMMON.format(max_steps=2)
    + """
model:
  class_path: lit_gen.models.Autoregressive
  init_args:
    network:
      class_path: lit_gen.nets.GPT
      init_args: {vocab_size: 17, block_size: 64, n_layer: 1, n_head: 2, n_embd: 16, dropout: 0.0, bias: false}
    optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.5}
data:
  class_path: lit_gen.data.PixelTokens
  init_args:
    levels: 16
    images:
      class_path: lit_gen.data.Digits
      init_args: {image_size: 8, batch_size: 16}
"""
)

#: dropout draws from the global torch RNG: each rank its own stream; resumed from step 2 of 4
GPT_DROPOUT = GPT.replace("max_steps: 2", "max_steps: 4").replace("dropout: 0.0", "dropout: 0.2")

VAE = (
    COMMON.format(max_steps=3)
    + """
model:
  class_path: lit_gen.models.VAE
  init_args:
    encoder:
      class_path: lit_gen.nets.MLPEncoder
      init_args: {image_shape: [1, 8, 8], hidden: [16], latent_dim: 4}
    decoder:
      class_path: lit_gen.nets.MLPDecoder
      init_args: {latent_dim: 4, hidden: [16], image_shape: [1, 8, 8], params_per_pixel: 1}
    k: 2
    val_k: 2
    optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.1}
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 16}
"""
)

#: one DDP launch per family, side by side in the module fixture (about 30 s per family on 2 loaded cores)
pytestmark = [pytest.mark.ddp, pytest.mark.slow]

HAS_GPT = importlib.util.find_spec("lit_gen.models.autoregressive") is not None
FAMILIES = {"gan": GAN, "vae": VAE, **({"gpt": GPT, "gpt_dropout": GPT_DROPOUT} if HAS_GPT else {})}
#: the runs resumed from a checkpoint of their DDP run, and the step it was saved at
RESUMED = {"gan": 4, "gpt_dropout": 2}


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


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each family's DDP run (launched side by side) and the matching single-process run (in-process)."""
    tmp = tmp_path_factory.mktemp("ddp")
    env = subprocess_env(PYTHONUNBUFFERED="1")  # the DDP processes import helpers.callbacks.DrawsGlobalRandom

    def launch(command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp
        )

    def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
        out, err = process.communicate(timeout=600)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    launched = {}
    for name, text in FAMILIES.items():
        config = tmp / f"{name}.yaml"
        config.write_text(text)
        # a resumed family keeps its halfway checkpoint (the state a run stopped there saves) to resume from
        keep = (
            ["--checkpoint.every_n_train_steps", str(RESUMED[name]), "--checkpoint.save_top_k", "-1"]
            if name in RESUMED
            else []
        )
        launched[name] = launch([*ddp_command(config, tmp / name / "ddp"), *keep])
    for name in ("gan", "gpt", "vae"):
        if name in FAMILIES:
            run("fit", "--config", tmp / f"{name}.yaml", "--run.root", tmp / name / "single")
    results = {name: (tmp / name, finish(process)) for name, process in launched.items()}
    resumed = {}
    for name, step in RESUMED.items():
        halfway = list((tmp / name / "ddp").glob(f"*/*/checkpoints/epoch=*-step={step}.ckpt"))
        if name in FAMILIES and len(halfway) == 1:
            command = ddp_command(tmp / f"{name}.yaml", tmp / name / "resumed")
            resumed[name] = launch([*command, "--ckpt_path", str(halfway[0])])
    results.update({f"{name}_resumed": (tmp / name, finish(process)) for name, process in resumed.items()})
    return results


def assert_ran(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout


def assert_same_parameters(root: Path, atol: float) -> dict:
    ddp, single = last_checkpoint(root / "ddp"), last_checkpoint(root / "single")
    assert ddp["global_step"] == single["global_step"]
    assert len(ddp["rng_states"]) == 2 and len(single["rng_states"]) == 1  # one RNG state per rank
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key], value, atol=atol, rtol=1e-5, msg=key)
    return ddp


def logged(root: Path, key: str) -> list[float]:
    (path,) = root.glob("*/*/csv/metrics.csv")
    return [float(row[key]) for row in csv.DictReader(path.open()) if row.get(key)]


def test_gan_ddp_matches_one_process_with_the_global_batch(ddp_runs):
    root, result = ddp_runs["gan"]
    assert_ran(result)
    assert "find_unused_parameters=True" in result.stderr + result.stdout
    ddp = assert_same_parameters(root, atol=1e-6)
    # two batches were trained on (the comparison is not of two initialisations)
    assert (
        int(ddp["state_dict"]["batches_seen"]) == 4
        and int(ddp["state_dict"]["generator_ema.n_averaged"]) == 4
    )
    # losses are synced over ranks: the mean of the two half batches is the single-process loss
    for key in ("train/d_loss", "train/g_loss", "train/D_real"):
        single, distributed = logged(root / "single", key), logged(root / "ddp", key)
        assert len(single) == len(distributed) == 4
        torch.testing.assert_close(torch.tensor(distributed), torch.tensor(single), atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not HAS_GPT, reason="the transformer family is not in this checkout")
def test_transformer_ddp_matches_one_process_with_the_global_batch(ddp_runs):
    root, result = ddp_runs["gpt"]
    assert_ran(result)
    assert_same_parameters(root, atol=1e-6)


def test_vae_ddp_matches_one_process_with_the_global_batch(ddp_runs):
    root, result = ddp_runs["vae"]
    assert_ran(result)
    ddp = assert_same_parameters(root, atol=1e-6)  # binarization and k = 2 latents drawn for the global batch
    assert ddp["global_step"] == 3 and int(ddp["state_dict"]["batches_seen"]) == 3
    assert all(torch.isfinite(v).all() for v in ddp["state_dict"].values() if v.is_floating_point())
    assert ddp["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 3}]


def assert_resumed_bitwise(ddp_runs, name: str, steps: int) -> dict:
    """The DDP run resumed halfway ends bitwise equal to the uninterrupted one; returns the latter's last
    checkpoint."""
    assert f"{name}_resumed" in ddp_runs, f"the {name} DDP run left no step-{RESUMED[name]} checkpoint"
    root, resumed_run = ddp_runs[f"{name}_resumed"]
    assert_ran(resumed_run)
    assert "Restored all states from the checkpoint" in resumed_run.stderr + resumed_run.stdout
    whole, resumed = last_checkpoint(root / "ddp"), last_checkpoint(root / "resumed")
    assert whole["global_step"] == resumed["global_step"] == steps
    assert len(resumed["rng_states"]) == 2
    for key in ("state_dict", "optimizer_states", "rng_states", "loops"):
        assert differences(whole[key], resumed[key], key) == [], key
    return whole


def test_gan_ddp_resume_is_bitwise_equal_to_the_uninterrupted_ddp_run(ddp_runs):
    assert_resumed_bitwise(ddp_runs, "gan", 8)


@pytest.mark.skipif(not HAS_GPT, reason="the transformer family is not in this checkout")
def test_transformer_ddp_ranks_draw_their_own_dropout_and_resume_bitwise(ddp_runs):
    assert_ran(ddp_runs["gpt_dropout"][1])
    whole = assert_resumed_bitwise(ddp_runs, "gpt_dropout", 4)
    # seed_everything seeds both ranks alike: the same global torch stream would give both the same masks
    first, second = (states["torch"] for states in whole["rng_states"])
    assert not torch.equal(first, second)
