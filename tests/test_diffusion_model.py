"""The Gaussian-path family (``lit_gen.models.Diffusion``) through the CLI: tiny fits of every path on 2-D points
and on images, bitwise resume, EMA sampling, class conditioning and guidance, the NaN guard, bf16, checkpoint ->
``load_model`` -> ``generate``, and the ODE likelihood."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers.runners import run
from helpers.runs import differences, last_checkpoint

from lit_gen.checkpoints import load_model
from lit_gen.commands.evaluate import generated_batches
from lit_gen.diffusion import DDIM, FlowHeun, FlowMatching
from lit_gen.diffusion.likelihood import standard_normal_log_prob
from lit_gen.errors import LitGenError
from lit_gen.models import Diffusion
from lit_gen.nets import TimeMLP, UNet

PATHS = {
    "edm": "lit_gen.diffusion.EDM",
    "vp": "{class_path: lit_gen.diffusion.VP, init_args: {num_timesteps: 100}}",
    "fm-ot": "{class_path: lit_gen.diffusion.FlowMatching, init_args: {ot: true}}",
}
#: a few steps of each path's own sampler family, so that generating is quick
SAMPLERS = {
    "edm": "{class_path: lit_gen.diffusion.EDMHeun, init_args: {steps: 4}}",
    "vp": "{class_path: lit_gen.diffusion.DDIM, init_args: {steps: 4, num_timesteps: 100}}",
    "fm-ot": "{class_path: lit_gen.diffusion.FlowEuler, init_args: {steps: 4}}",
}

#: the trainer settings of both tiny configs, up to their callbacks
TRAINER = """
trainer:
  accelerator: cpu
  devices: 1
  max_steps: MAX_STEPS
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
"""

TOY = (
    TRAINER
    + """    - class_path: lit_gen.callbacks.ModeMetrics
      init_args: {every_n_batches: 2, num_samples: 64}
model:
  class_path: lit_gen.models.Diffusion
  init_args:
    net:
      class_path: lit_gen.nets.TimeMLP
      init_args: {hidden: [16, 16], time_dim: 8, embedding: fourier}
    path: PATH
    sampler: SAMPLER
    ema_decay: 0.9
data:
  class_path: lit_gen.data.Ring
  init_args: {num_train: 64, num_val: 16, batch_size: 8}
checkpoint:
  every_n_train_steps: 3
seed_everything: 1
"""
)

# class-conditional U-Net (dropout: draws from the global RNG) with label dropout, a warm-up schedule and EMA;
# 72 training digits / batch 8 = 9 batches per epoch: a stop after 5 batches is mid-epoch and the resumed half
# crosses an epoch boundary
IMAGES = (
    TRAINER
    + """    - class_path: lit_gen.callbacks.SampleGrid
      init_args: {every_n_batches: 4, num_samples: 4}
model:
  class_path: lit_gen.models.Diffusion
  init_args:
    net:
      class_path: lit_gen.nets.UNet
      init_args:
        in_channels: 1
        image_size: 8
        channels: 8
        channel_mult: [1, 2]
        num_res_blocks: 1
        attention_resolutions: [4]
        dropout: 0.1
        num_classes: 10
    path: PATH
    sampler: SAMPLER
    ema_decay: 0.9
    optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.001}}
    lr_scheduler:
      class_path: torch.optim.lr_scheduler.LinearLR
      init_args: {start_factor: 0.1, total_iters: 4}
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 8, val_fraction: 0.96}
checkpoint:
  every_n_train_steps: 3
seed_everything: 2
"""
)


def config(template: str, path: str = "fm-ot", max_steps: int = 4) -> str:
    return (
        template.replace("MAX_STEPS", str(max_steps))
        .replace("PATH", PATHS[path])
        .replace("SAMPLER", SAMPLERS[path])
    )


def last_checkpoint_path(root: Path) -> Path:
    (path,) = Path(root).glob("*/*/checkpoints/last.ckpt")
    return path


def fit(tmp_path: Path, text: str, name: str = "model", *extra) -> Path:
    """Fits the config ``text`` under ``tmp_path/name``; returns its last checkpoint's path."""
    (tmp_path / f"{name}.yaml").write_text(text)
    run("fit", "--config", tmp_path / f"{name}.yaml", "--run.root", tmp_path / name, *extra)
    return last_checkpoint_path(tmp_path / name)


# --- tiny fits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("data", ["toy", "images"])
def test_every_path_fits_and_its_checkpoint_loads_and_generates(tmp_path, path, data):
    ckpt = fit(tmp_path, config(TOY if data == "toy" else IMAGES, path))
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["global_step"] == 4 and int(checkpoint["state_dict"]["batches_seen"]) == 4
    assert int(checkpoint["state_dict"]["net_ema.n_averaged"]) == 4
    model, _ = load_model(ckpt)
    assert isinstance(model, Diffusion)
    samples = model.generate(6, rng=torch.Generator().manual_seed(0))
    if data == "toy":
        assert samples.shape == (6, 2)
    else:
        assert samples.shape == (6, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert torch.isfinite(samples).all()
    assert model.last_nfe == {"edm": 7, "vp": 4, "fm-ot": 4}[path]
    again = model.generate(6, rng=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


# --- resume -----------------------------------------------------------------------------------------------------

RESUMED_STATE = (
    "state_dict",
    "optimizer_states",
    "lr_schedulers",
    "rng_states",
    "loops",
    "global_step",
    "epoch",
)


@pytest.mark.parametrize("path", ["edm", "fm-ot"])
def test_resume_is_bitwise_equal_to_the_uninterrupted_run(tmp_path, path):
    text = config(IMAGES, path, max_steps=10)
    (tmp_path / "model.yaml").write_text(text)
    run("fit", "--config", tmp_path / "model.yaml", "--run.root", tmp_path / "whole")
    run(
        "fit", "--config", tmp_path / "model.yaml", "--run.root", tmp_path / "parts", "--trainer.max_steps", 5
    )
    (run_dir,) = (tmp_path / "parts").glob("*/*")
    assert last_checkpoint(tmp_path / "parts")["global_step"] == 5
    run("fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last", "--trainer.max_steps", 10)
    whole, resumed = last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "parts")
    assert whole["global_step"] == resumed["global_step"] == 10
    for key in RESUMED_STATE:
        assert differences(whole[key], resumed[key], key) == [], key
    assert int(whole["state_dict"]["net_ema.n_averaged"]) == 10
    assert whole["lr_schedulers"][0]["last_epoch"] == 10
    assert whole["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    prefixes = {key.split(".")[0] for key in whole["state_dict"]}
    assert prefixes == {"net", "net_ema", "batches_seen"}


# --- sampling: EMA, labels, guidance ----------------------------------------------------------------------------


def conditional_toy_model(**kwargs) -> Diffusion:
    torch.manual_seed(0)
    net = TimeMLP(hidden=[16], time_dim=8, embedding="fourier", num_classes=3)
    return Diffusion(net, path=FlowMatching(), sampler=FlowHeun(3), ema_decay=0.5, **kwargs)


def test_generate_samples_with_the_ema_net():
    model = conditional_toy_model()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.5)
    samples = model.generate(8, torch.Generator().manual_seed(0))
    live = model.generate(8, torch.Generator().manual_seed(0), ema=False)
    assert not torch.equal(samples, live)
    model.net_ema.module, model.net = model.net, model.net_ema.module  # the EMA's weights as the live net
    assert torch.equal(model.generate(8, torch.Generator().manual_seed(0), ema=False), samples)
    assert model.last_nfe == 5


def test_guidance_zero_is_the_unconditional_model_and_labels_are_honoured():
    model = conditional_toy_model()
    with torch.no_grad():  # make the class embedding matter
        model.net_ema.module.time.classes.weight.normal_()

    def sample(**kwargs):
        return model.generate(6, torch.Generator().manual_seed(0), **kwargs)

    assert torch.equal(sample(guidance=0.0, labels=[0]), sample(guidance=0.0, labels=[2]))
    assert not torch.equal(sample(labels=[0]), sample(labels=[2]))
    # one class, or a list cycled over the samples; default: the classes in turn
    assert torch.equal(sample(labels=[0, 1, 2]), sample())
    assert model.sampling_labels(5, [2, 0]).tolist() == [2, 0, 2, 0, 2]
    assert model.sampling_labels(3, 1).tolist() == [1, 1, 1]
    with pytest.raises(LitGenError, match=r"labels: expected classes in 0..2, got \[3\]"):
        sample(labels=3)
    # guidance > 1 costs one evaluation per step on the doubled batch
    sample(guidance=2.0)
    assert model.last_nfe == 5


def test_labels_and_guidance_for_an_unconditional_model_are_errors():
    model = Diffusion(TimeMLP(hidden=[8], time_dim=8), sampler=DDIM(steps=3))
    assert model.label_dropout == 0.0
    with pytest.raises(LitGenError, match="labels: the model is unconditional"):
        model.generate(2, labels=1)
    with pytest.raises(LitGenError, match="guidance: the model is unconditional"):
        model.generate(2, guidance=2.0)
    assert model.generate(2, steps=5).shape == (2, 2) and model.last_nfe == 5
    with pytest.raises(LitGenError, match="steps must be an integer >= 2"):
        model.generate(2, steps=1)


def test_label_dropout_defaults_to_the_papers_for_a_conditional_net():
    assert conditional_toy_model().label_dropout == 0.1
    with pytest.raises(LitGenError, match="model.label_dropout"):
        Diffusion(TimeMLP(hidden=[8]), label_dropout=0.2)


def test_a_conditional_model_learns_the_class_it_is_asked_for(tmp_path):
    """Ring labels are the mode index: after a short fit, samples of class k land nearest mode k."""
    text = config(TOY, "fm-ot", max_steps=300).replace(
        "embedding: fourier}", "embedding: fourier, num_classes: 8}"
    )
    text = text.replace("hidden: [16, 16], time_dim: 8", "hidden: [64, 64], time_dim: 16")
    text = text.replace("num_train: 64, num_val: 16, batch_size: 8", "batch_size: 128")
    text = text.replace("every_n_batches: 2", "every_n_batches: 0").replace("{steps: 4}", "{steps: 10}")
    text = text.replace(
        "ema_decay: 0.9",
        "ema_decay: 0.95\n    optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.003}}",
    )
    model, checkpoint = load_model(fit(tmp_path, text))
    from lit_gen.checkpoints import load_datamodule

    modes = load_datamodule(checkpoint).modes
    for k in (0, 3, 6):
        samples = model.generate(100, torch.Generator().manual_seed(k), labels=k, guidance=2.0)
        nearest = torch.cdist(samples, modes).argmin(1)
        assert (nearest == k).float().mean() >= 0.9, (k, nearest.bincount(minlength=8))


# --- failures and precision -------------------------------------------------------------------------------------


def test_a_non_finite_loss_stops_the_fit_on_a_batch_that_does_not_log(cli, tmp_path):
    (tmp_path / "toy.yaml").write_text(config(TOY, "edm", max_steps=10))
    code, _, err = cli(
        *("fit", "--config", tmp_path / "toy.yaml", "--trainer.log_every_n_steps=50"),
        *(
            "--trainer.callbacks",
            "[{class_path: helpers.callbacks.PoisonFirstParameter, init_args: {batch: 5}}]",
        ),
    )
    assert code != 0
    line = err.strip().splitlines()[-1]
    assert "non-finite training loss at batch 5" in line and "train/loss" in line, err[-2000:]
    assert last_checkpoint(Path("runs"))["global_step"] == 3


def test_bf16_mixed_trains_a_step(tmp_path):
    ckpt = fit(tmp_path, config(IMAGES, "edm", max_steps=2), "bf16", "--trainer.precision", "bf16-mixed")
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["global_step"] == 2
    weights = [v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights if v.is_floating_point())


# --- likelihood -------------------------------------------------------------------------------------------------


def test_log_likelihood_of_a_zero_velocity_is_the_prior():
    """A flow-matching net whose velocity is 0 leaves the standard normal prior as the model."""
    model = Diffusion(TimeMLP(hidden=[8], time_dim=8), path=FlowMatching(), ema_decay=None)
    with torch.no_grad():
        model.net.net[-1].weight.zero_(), model.net.net[-1].bias.zero_()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    log_p = model.log_likelihood(x, steps=4)
    torch.testing.assert_close(log_p, standard_normal_log_prob(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", ["edm", "vp", "fm-ot"])
def test_bits_per_dim_of_images_is_finite_and_uses_hutchinson(path):
    from lit_gen.diffusion import EDM, VP

    torch.manual_seed(0)
    net = UNet(in_channels=1, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(), num_classes=10)  # fmt: skip
    chosen = {"edm": EDM(), "vp": VP(num_timesteps=100), "fm-ot": FlowMatching()}[path]
    model = Diffusion(net, path=chosen, ema_decay=None)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    bpd = model.bits_per_dim(images, steps=2, rng=torch.Generator().manual_seed(1))
    assert bpd.shape == (3,) and torch.isfinite(bpd).all()
    # an untrained net is a poor model, but no worse than ~ a Gaussian's code length of uniform pixels
    assert (bpd > 0).all() and (bpd < 20).all(), bpd
    assert math.isfinite(float(model.log_likelihood(images, steps=2).mean()))


# --- the number of network evaluations ---------------------------------------------------------------------------


def test_mode_metrics_and_evaluate_record_the_samplers_network_evaluations(tmp_path):
    """ModeMetrics logs ``val/nfe`` (EDM Heun, 4 steps = 7 NFE); ``evaluate`` records it and samples from the
    live net with ``--ema false``."""
    ckpt = fit(tmp_path, config(TOY, "edm"))
    (metrics,) = ckpt.parents[1].glob("csv/metrics.csv")
    rows = [line.split(",") for line in metrics.read_text().splitlines()]
    column = rows[0].index("val/nfe")
    assert {float(row[column]) for row in rows[1:] if row[column]} == {7.0}

    model, _ = load_model(fit(tmp_path, config(IMAGES, "edm"), "images"))
    source: dict = {}
    (samples,) = generated_batches(model, 4, 4, 0, False, torch.device("cpu"), source)
    assert source["nfe"] == 7
    assert torch.equal(samples, model.generate(4, rng=torch.Generator().manual_seed(0), ema=False))
    assert not torch.equal(samples, model.generate(4, rng=torch.Generator().manual_seed(0)))
