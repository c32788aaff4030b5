"""Tiny configs for tests that train a few steps (a second or so on a CPU), and ``write_config``."""

from __future__ import annotations

from pathlib import Path

#: a DCGAN on the embedded digits at 8 px with 8-wide nets: 2 batches (4 optimizer steps) take about a second
TINY_IMAGE_GAN = """\
# tiny DCGAN on 8 px digits for the tests
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 4            # 2 batches: one D and one G step each
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
  callbacks:
    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 1, num_samples: 16}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.DCGANGenerator
      init_args: {latent_dim: 8, channels: 1, image_size: 8, width: 8}
    discriminator:
      class_path: lit_gen.nets.DCGANDiscriminator
      init_args: {channels: 1, image_size: 8, width: 8}
    ema_decay: 0.9
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 16}
"""

#: a PacGAN2 MLP GAN on the ring of 8 Gaussians with the mode metrics
TINY_TOY_GAN = """\
# tiny MLP GAN on the ring for the tests
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 4
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
  callbacks:
    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 1, num_samples: 200}
    - class_path: lit_gen.callbacks.ModeMetrics
      init_args: {every_n_batches: 1, num_samples: 200}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {latent_dim: 2, hidden: [16, 16]}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {data_dim: 4, hidden: [16, 16]}
    pack: 2
    ema_decay: null
data:
  class_path: lit_gen.data.Ring
  init_args: {num_train: 1000, num_val: 100, batch_size: 32}
"""

#: a toy GAN logging to offline W&B and CSV that trains in a second: 6 batches, samples and mode metrics every 3
#: batches
TINY_WANDB_GAN = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 12
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    - class_path: lit_gen.loggers.OfflineFirstWandbLogger
      init_args: {project: lit_gen_tests, tags: [toy, test]}
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {name: csv, version: ""}
  callbacks:
    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 3, num_samples: 100}
    - class_path: lit_gen.callbacks.ModeMetrics
      init_args: {every_n_batches: 3, num_samples: 200}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {latent_dim: 2, hidden: [16], data_dim: 2}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {data_dim: 2, hidden: [16]}
    ema_decay: null
    generator_optimizer:
      class_path: torch.optim.Adam
      init_args: {lr: 0.0002, betas: [0.5, 0.999]}
    discriminator_optimizer:
      class_path: torch.optim.Adam
      init_args: {lr: 0.0002, betas: [0.5, 0.999]}
data:
  class_path: lit_gen.data.Grid
  init_args: {side: 5, spacing: 2.0, std: 0.05, batch_size: 32}
"""


def write_config(path: Path, text: str) -> Path:
    """Writes a config file (its stem becomes the run name) and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# the VAE draws its noise from per-batch generators; DrawsGlobalRandom makes the global RNG states matter, and
# validations (every 4 batches) must not shift them
VAE_CONFIG = """
seed_everything: 5
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 12
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 2
  val_check_interval: 4
  num_sanity_val_steps: 1
  callbacks:
    - class_path: helpers.callbacks.DrawsGlobalRandom
model:
  class_path: lit_gen.models.VAE
  init_args:
    encoder:
      class_path: lit_gen.nets.MLPEncoder
      init_args: {image_shape: [1, 8, 8], hidden: [16], latent_dim: 4}
    decoder:
      class_path: lit_gen.nets.MLPDecoder
      init_args: {latent_dim: 4, hidden: [16], image_shape: [1, 8, 8], params_per_pixel: 1}
    likelihood:
      class_path: lit_gen.likelihoods.Bernoulli
      init_args: {binarize: true}
    val_k: 2
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 64}
checkpoint:
  every_n_train_steps: 5
"""
