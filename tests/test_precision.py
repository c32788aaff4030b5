"""Mixed precision with two optimizers: gradient penalties in float32 under autocast, a GAN trained in
``bf16-mixed`` through the CLI, and the ``16-mixed`` GradScaler path (one scaler for both players, clipping
after unscaling) run on CPU through Lightning's own precision plugin with a CPU GradScaler."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.runners import run
from helpers.runs import last_checkpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lit_gen.data import Ring
from lit_gen.losses import r1_penalty, wgan_gp_penalty
from lit_gen.models import GAN
from lit_gen.nets import MLPDiscriminator, MLPGenerator


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gradient_penalties_are_float32_and_finite_under_autocast(dtype):
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():  # outputs of ~1e6: beyond float16's 65504
        critic[0].weight.mul_(3000.0)
        critic[2].weight.mul_(3000.0)
    real, fake, mix = torch.randn(16, 4), torch.randn(16, 4), torch.rand(16)
    expected = (wgan_gp_penalty(critic, real, fake, mix), r1_penalty(critic, real))
    with torch.autocast("cpu", dtype=dtype):
        if dtype == torch.float16:  # what the penalty would see if it ran under autocast
            assert not torch.isfinite(critic(real)).all()
        got = (wgan_gp_penalty(critic, real, fake, mix), r1_penalty(critic, real))
    for value, reference in zip(got, expected):
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, reference)


BF16_CONFIG = """
seed_everything: 2
trainer:
  accelerator: cpu
  devices: 1
  precision: bf16-mixed
  max_steps: 12
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.DCGANGenerator
      init_args: {latent_dim: 8, channels: 1, image_size: 8, width: 8}
    discriminator:
      class_path: lit_gen.nets.DCGANDiscriminator
      init_args: {channels: 1, image_size: 8, width: 8, norm: layer}
    loss: lit_gen.losses.Wasserstein
    penalty: lit_gen.losses.WGANGP
    gradient_clip_val: 1.0
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 16}
"""


def test_gan_trains_in_bf16_mixed_with_wgan_gp_and_clipping(tmp_path):
    (tmp_path / "bf16.yaml").write_text(BF16_CONFIG)
    run("fit", "--config", tmp_path / "bf16.yaml", "--run.root", tmp_path / "runs")
    last = last_checkpoint(tmp_path / "runs")
    assert last["global_step"] == 12
    # parameters stay float32 (autocast computes in bf16, the weights do not change dtype)
    floats = [v for v in last["state_dict"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floats)
    (metrics,) = (tmp_path / "runs").glob("*/*/csv/metrics.csv")
    rows = list(csv.DictReader(Path(metrics).open()))
    penalties = [float(r["train/gradient_penalty"]) for r in rows if r.get("train/gradient_penalty")]
    assert len(penalties) == 6 and all(torch.isfinite(torch.tensor(penalties)))


class GradientProbe(L.Callback):
    """Records each player's gradient norm before clipping (callbacks' ``on_before_optimizer_step`` runs
    after unscaling and before the module's hook) and at the optimizer's step (after clipping)."""

    def __init__(self) -> None:
        self.before, self.at_step = [], []

    @staticmethod
    def norm(optimizer) -> float:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(self.norm(optimizer))

    def on_train_start(self, trainer, pl_module) -> None:
        for optimizer in trainer.optimizers:
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.at_step.append(self.norm(opt)))


def test_16_mixed_shares_one_grad_scaler_and_clips_unscaled_gradients():
    torch.manual_seed(0)
    clip = 1e-3
    model = GAN(
        MLPGenerator(2, [16, 16], 2), MLPDiscriminator(2, [16, 16]), ema_decay=None, noise_seed=0,
        gradient_clip_val=clip,
    )  # fmt: skip
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    probe = GradientProbe()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], max_steps=8,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[probe],
    )  # fmt: skip
    trainer.fit(model, Ring(num_train=64, num_val=8, batch_size=8))
    assert trainer.precision_plugin.scaler is scaler  # the one scaler both players' steps go through
    assert len(probe.before) == 8
    # the gradients the hook sees are unscaled (not ~65,536 times too large) and larger than the clip ...
    finite = [norm for norm in probe.before if math.isfinite(norm)]  # inf/NaN: an overflow step
    assert finite and all(clip < norm < 1e3 for norm in finite)
    # ... and the step sees them clipped to the threshold; clipping still-scaled gradients would have left
    # them ~1/scale of it after unscaling. Steps with inf/NaN gradients are skipped by the scaler.
    assert probe.at_step and all(norm == pytest.approx(clip, rel=1e-3) for norm in probe.at_step)
    assert scaler.get_scale() <= 2.0**16
