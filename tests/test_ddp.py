"""DDP for real: 2 CPU processes (gloo) through ``python -m lit_gen fit --trainer.strategy ddp``.

One DDP launch per family (GAN, pixel GPT, VAE, and a pixel GPT with dropout), started side by side, plus DDP
runs resumed from the GAN's and the dropout GPT's halfway checkpoints, which must end bitwise equal to the
uninterrupted DDP runs; the dropout GPT's ranks must draw from different global RNG streams. After a few
batches with the same global data (each rank takes half of the single-process batch: ``ResumableSampler``
shards the same permutation) the DDP parameters must equal a single-process run with the whole batch to float
tolerance, and every family's logged losses are the mean over ranks, so they equal the single-process losses.
The GAN also draws the same global latents (each rank its rows); the VAE likewise draws the global batch's
binarization and reparameterization noise. The models have no BatchNorm: under DDP BatchNorm normalises each rank's half
batch with that half's statistics, which no single-process run reproduces. SGD, not Adam: Adam's first steps
move each weight by about ``lr * sign(gradient)``, which would hide gradient errors.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch
from helpers.ddp import (
    COMMON,
    assert_ran,
    assert_resumed_bitwise,
    assert_same_logged,
    assert_same_parameters,
    ddp_and_single_runs,
)

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


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each family's DDP run (launched side by side) and the matching single-process run (in-process)."""
    single = {name: FAMILIES[name] for name in ("gan", "gpt", "vae") if name in FAMILIES}
    return ddp_and_single_runs(tmp_path_factory.mktemp("ddp"), FAMILIES, single, RESUMED)


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
    assert_same_logged(root, ("train/d_loss", "train/g_loss", "train/D_real"), batches=4)


@pytest.mark.skipif(not HAS_GPT, reason="the transformer family is not in this checkout")
def test_transformer_ddp_matches_one_process_with_the_global_batch(ddp_runs):
    root, result = ddp_runs["gpt"]
    assert_ran(result)
    assert_same_parameters(root, atol=1e-6)
    assert_same_logged(root, ("train/loss", "train/perplexity"), batches=2)


def test_vae_ddp_matches_one_process_with_the_global_batch(ddp_runs):
    root, result = ddp_runs["vae"]
    assert_ran(result)
    ddp = assert_same_parameters(root, atol=1e-6)  # binarization and k = 2 latents drawn for the global batch
    assert ddp["global_step"] == 3 and int(ddp["state_dict"]["batches_seen"]) == 3
    assert all(torch.isfinite(v).all() for v in ddp["state_dict"].values() if v.is_floating_point())
    assert ddp["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 3}]
    assert_same_logged(root, ("train/loss", "train/recon"), batches=3)


def test_gan_ddp_resume_is_bitwise_equal_to_the_uninterrupted_ddp_run(ddp_runs):
    assert_resumed_bitwise(ddp_runs, "gan", 8)


@pytest.mark.skipif(not HAS_GPT, reason="the transformer family is not in this checkout")
def test_transformer_ddp_ranks_draw_their_own_dropout_and_resume_bitwise(ddp_runs):
    assert_ran(ddp_runs["gpt_dropout"][1])
    whole = assert_resumed_bitwise(ddp_runs, "gpt_dropout", 4)
    # seed_everything seeds both ranks alike: the same global torch stream would give both the same masks
    first, second = (states["torch"] for states in whole["rng_states"])
    assert not torch.equal(first, second)
