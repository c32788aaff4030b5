"""Bit-exact resume: ``fit`` for 2N steps == ``fit`` N steps, stop, ``fit --config <run>/config.yaml
--ckpt_path last`` N more — parameters, EMA, both optimizers, LR schedulers, RNG states, loop counters and the
data loader's position, compared bitwise on CPU — and the ``--ckpt_path`` hyper-parameter policy."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.configs import TINY_TOY_GAN, VAE_CONFIG
from helpers.paths import CONFIGS
from helpers.runners import lightning_log, run, subprocess_env
from helpers.runs import differences, last_checkpoint, metrics_rows

# n_critic 2 (global_step = batches + batches // 2), WGAN-GP (its own noise stream), LR schedulers on both
# players, EMA; 64 points / batch 8 = 8 batches per epoch, so the stop after 5 batches is mid-epoch and the
# resumed half crosses an epoch boundary
GAN_CONFIG = """
seed_everything: 3
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 15
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {latent_dim: 2, hidden: [16, 16], data_dim: 2}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {data_dim: 2, hidden: [16, 16]}
    loss: lit_gen.losses.Wasserstein
    penalty: lit_gen.losses.WGANGP
    n_critic: 2
    ema_decay: 0.9
    generator_lr_scheduler:
      class_path: torch.optim.lr_scheduler.StepLR
      init_args: {step_size: 2, gamma: 0.5}
    discriminator_lr_scheduler:
      class_path: torch.optim.lr_scheduler.StepLR
      init_args: {step_size: 3, gamma: 0.9}
data:
  class_path: lit_gen.data.Ring
  init_args: {num_train: 64, num_val: 16, batch_size: 8}
checkpoint:
  every_n_train_steps: 3
"""
GAN_HALF_STEPS = 7  # 5 batches


VAE_HALF_STEPS = 6  # a validation ran at step 4 in both runs; the uninterrupted one validates at 8 too


#: what must be equal after resume (the callbacks' state holds paths, which differ between runs)
RESUMED_STATE = (
    "state_dict",
    "optimizer_states",
    "lr_schedulers",
    "rng_states",
    "loops",
    "global_step",
    "epoch",
)


def fit_whole_and_resumed(tmp: Path, config: str, half: int, whole: int) -> tuple[dict, dict, Path]:
    (tmp / "model.yaml").write_text(config)
    run("fit", "--config", tmp / "model.yaml", "--run.root", tmp / "whole")
    run("fit", "--config", tmp / "model.yaml", "--run.root", tmp / "parts", "--trainer.max_steps", half)
    (run_dir,) = (tmp / "parts").glob("*/*")
    assert last_checkpoint(tmp / "parts")["global_step"] == half
    with lightning_log() as messages:
        run("fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last", "--trainer.max_steps", whole)
    # the second part really resumed (a fresh start would also end equal)
    assert any(m.startswith("Restoring states from the checkpoint path at") for m in messages), messages
    return last_checkpoint(tmp / "whole"), last_checkpoint(tmp / "parts"), run_dir


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gan_resume")
    return fit_whole_and_resumed(tmp, GAN_CONFIG, GAN_HALF_STEPS, 15)


def test_gan_resume_is_bitwise_equal_to_the_uninterrupted_run(gan_runs):
    whole, resumed, _ = gan_runs
    assert whole["global_step"] == resumed["global_step"] == 15
    for key in RESUMED_STATE:
        assert differences(whole[key], resumed[key], key) == [], key
    # what is compared is not trivially equal: the EMA, both optimizers and both schedulers moved
    assert int(whole["state_dict"]["generator_ema.n_averaged"]) == 5
    assert len(whole["optimizer_states"]) == 2 and all(s["state"] for s in whole["optimizer_states"])
    assert [s["last_epoch"] for s in whole["lr_schedulers"]] == [5, 10]
    # the loader's position is in the checkpoint: 10 batches = one epoch of 8 + 2
    assert whole["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]


def test_gan_checkpoint_holds_no_metric_networks_and_loads_weights_only(gan_runs):
    whole, _, _ = gan_runs
    prefixes = {key.split(".")[0] for key in whole["state_dict"]}
    assert prefixes == {"generator", "discriminator", "generator_ema", "batches_seen"}


@pytest.fixture(scope="module")
def toy_whole(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run directory) of an uninterrupted 10-batch toy GAN run that logs on every batch."""
    tmp = tmp_path_factory.mktemp("toy_whole")
    config = TINY_TOY_GAN.replace("max_steps: 4", "max_steps: 20")  # 10 batches
    config = config.replace("every_n_batches: 1, num_samples: 200", "every_n_batches: 1, num_samples: 50")
    (tmp / "toy.yaml").write_text(config + "checkpoint:\n  every_n_train_steps: 6\n")
    run("fit", "--config", tmp / "toy.yaml", "--run.root", tmp / "whole")
    (whole,) = (tmp / "whole").glob("*/*")
    return tmp / "toy.yaml", whole


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_resume_keeps_the_csv_history_and_replaces_the_retrained_rows(toy_whole, tmp_path, stop):
    """A run stopped during batch 8 (SIGTERM: stops after that batch and saves it; SIGKILL: dies at once, its
    checkpoint is from batch 6) and resumed with ``--ckpt_path last`` ends with the uninterrupted run's
    ``metrics.csv``: no row from before the stop lost, none of the retrained batches twice. Every batch logs
    Lightning's row (step = batches before it) and ModeMetrics' row (step = batches done)."""
    config, whole = toy_whole
    part = subprocess.run(
        [sys.executable, "-m", "lit_gen", "fit", "--config", config, "--run.root", "parts",
         "--trainer.callbacks+=helpers.callbacks.SignalMidBatch", "--trainer.callbacks.batch=8",
         f"--trainer.callbacks.signal={int(stop)}"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert part.returncode in (128 + stop, -stop), part.stderr[-3000:]
    (run_dir,) = (tmp_path / "parts").glob("*/*")
    assert last_checkpoint(tmp_path / "parts")["global_step"] == (16 if stop == signal.SIGTERM else 12)
    steps = [int(row["step"]) for row in metrics_rows(run_dir)]
    assert max(steps) == 8 - (stop == signal.SIGKILL)  # rows of the batches after the checkpoint too

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["trainer"]["callbacks"] = [
        c for c in config["trainer"]["callbacks"] if "SignalMidBatch" not in str(c)
    ]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    run("fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last")
    assert last_checkpoint(tmp_path / "parts")["global_step"] == 20
    assert metrics_rows(run_dir) == metrics_rows(whole)


def test_shipped_configs_log_to_the_csv_logger_that_keeps_its_history():
    csv_loggers = {}
    for path in sorted(CONFIGS.rglob("*.yaml")):  # the experiment configs and the shared logger block
        data = yaml.safe_load(path.read_text())
        loggers = data if isinstance(data, list) else (data.get("trainer") or {}).get("logger") or []
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if isinstance(logger, dict) and "CSV" in logger.get("class_path", ""):
                csv_loggers[path.name] = logger["class_path"]
    assert csv_loggers and set(csv_loggers.values()) == {"lit_gen.loggers.ResumableCSVLogger"}, csv_loggers


def test_resuming_leaves_the_ckpt_path_of_the_runs_config(gan_runs):
    _, _, run_dir = gan_runs
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["max_steps"] == 15  # the resumed run's own settings are recorded
    assert config["ckpt_path"] is None  # as the run started, not the `last` it was resumed with


def fake_checkpoint(path: Path, batches: int, step: int) -> Path:
    """A file with just the parts of a Lightning checkpoint that ``newest_checkpoint`` reads."""
    progress = {"total": {"ready": batches, "started": batches, "processed": batches, "completed": batches}}
    loops = {"fit_loop": {"epoch_loop.batch_progress": progress}}
    torch.save({"state_dict": {}, "global_step": step, "loops": loops}, path)
    return path


def test_ckpt_path_last_is_the_checkpoint_with_the_most_training_progress(tmp_path):
    from lit_gen.checkpoints import newest_checkpoint

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    assert newest_checkpoint(tmp_path, ckpts) is None
    # a time-limited run: hpc_ckpt_1 on SIGUSR1 at step 3650, then it trained on to 4000 (minutes later)
    hpc = fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 1825, 3650)
    last = fake_checkpoint(ckpts / "last.ckpt", 2000, 4000)
    os.utime(hpc, (time.time() - 100, time.time() - 100))
    assert newest_checkpoint(tmp_path, ckpts) == last
    # requeued at 3650, while last.ckpt (written later, e.g. copied back) is from step 3000
    fake_checkpoint(ckpts / "last.ckpt", 1500, 3000)
    assert newest_checkpoint(tmp_path, ckpts) == hpc
    # both at the same batch (last.ckpt written on the SIGTERM that stops a requeued job): the hpc one
    fake_checkpoint(ckpts / "last.ckpt", 1825, 3650)
    hpc_10 = fake_checkpoint(tmp_path / "hpc_ckpt_10.ckpt", 1825, 3650)
    assert newest_checkpoint(tmp_path, ckpts) == hpc_10
    # a truncated checkpoint is no place to resume from
    last.write_bytes(last.read_bytes()[:100])
    fake_checkpoint(tmp_path / "hpc_ckpt_10.ckpt", 1000, 2000)
    assert newest_checkpoint(tmp_path, ckpts) == hpc


def test_ckpt_path_hyperparameters_do_not_override_the_config(gan_runs, tmp_path):
    _, _, run_dir = gan_runs
    step_ckpt = sorted(run_dir.glob("checkpoints/epoch=*.ckpt"))[-1]
    with pytest.warns(UserWarning, match=r"differ from the checkpoint's in ema_decay, n_critic"):
        run(
            "fit", "--config", run_dir.parents[2] / "model.yaml", "--run.root", tmp_path,
            "--ckpt_path", step_ckpt, "--trainer.max_steps", 18,
            "--model.init_args.ema_decay", 0.5, "--model.init_args.n_critic", 1,
        )  # fmt: skip
    resumed = last_checkpoint(tmp_path)
    assert resumed["hyper_parameters"]["ema_decay"] == 0.5 and resumed["hyper_parameters"]["n_critic"] == 1


def test_ckpt_path_of_another_model_class_is_a_one_line_error(gan_runs, cli, tmp_path):
    _, _, run_dir = gan_runs
    (tmp_path / "vae.yaml").write_text(VAE_CONFIG)
    code, _, err = cli(
        "fit", "--config", tmp_path / "vae.yaml", "--ckpt_path", run_dir / "checkpoints/last.ckpt"
    )
    assert code == 2
    assert (
        err.strip().count("\n") == 0 and "holds a lit_gen.models.GAN" in err and "lit_gen.models.VAE" in err
    )


def test_vae_resume_is_bitwise_equal_to_the_uninterrupted_run(tmp_path):
    whole, resumed, _ = fit_whole_and_resumed(tmp_path, VAE_CONFIG, VAE_HALF_STEPS, 12)
    for key in RESUMED_STATE:
        assert differences(whole[key], resumed[key], key) == [], key
    # training drew from the global RNGs, so restoring their states is what made this equal
    torch.manual_seed(5)
    assert not torch.equal(whole["rng_states"][0]["torch"], torch.get_rng_state())


HAS_GPT = importlib.util.find_spec("lit_gen.models.autoregressive") is not None

# dropout draws from the global torch RNG in every step; AdamW + warm-up/cosine schedule; validation every 3
GPT_CONFIG = """
seed_everything: 11
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 10
  gradient_clip_val: 1.0
  val_check_interval: 3
  check_val_every_n_epoch: null
  limit_val_batches: 2
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: lit_gen.models.Autoregressive
  init_args:
    network:
      class_path: lit_gen.nets.GPT
      init_args: {vocab_size: VOCAB, block_size: 16, n_layer: 1, n_head: 2, n_embd: 16, dropout: 0.2, bias: false}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.001, betas: [0.9, 0.99], weight_decay: 0.1}
    lr_scheduler:
      class_path: lit_gen.optim.WarmupCosineLR
      init_args: {warmup_steps: 2, decay_steps: 10, min_lr: 0.0001}
data:
DATA
"""
TEXT_DATA = """  class_path: lit_gen.data.Text
  init_args: {path: PATH, block_size: 16, batch_size: 4}"""
PIXEL_DATA = """  class_path: lit_gen.data.PixelTokens
  init_args:
    levels: 16
    images: {class_path: lit_gen.data.Digits, init_args: {image_size: 4, batch_size: 8}}"""


MUON = """    optimizer:
      class_path: lit_gen.optim.MuonWithAdamW
      init_args: {lr: 0.001, muon_lr: 0.002, weight_decay: 0.1}"""


@pytest.mark.skipif(not HAS_GPT, reason="the transformer family is not in this checkout")
@pytest.mark.parametrize("data", ["text", "pixels", "text-muon-rope"])
def test_transformer_resume_is_bitwise_equal_to_the_uninterrupted_run(tmp_path, data):
    if data.startswith("text"):
        text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300))
        (tmp_path / "corpus.txt").write_text(text)
        vocab = len(set(text))
        block = TEXT_DATA.replace("PATH", str(tmp_path / "corpus.txt"))
    else:
        vocab, block = 17, PIXEL_DATA  # 4 x 4 pixels at 16 levels + begin-of-image: 16 tokens per image
    config = GPT_CONFIG.replace("VOCAB", str(vocab)).replace("DATA", block)
    if (
        data == "text-muon-rope"
    ):  # the speedrun's optimizer (two torch optimizers in one) and rotary embeddings
        config = config.replace("bias: false}", "bias: false, rotary: true}")
        start, end = config.index("    optimizer:"), config.index("    lr_scheduler:")
        config = config[:start] + MUON + "\n" + config[end:]
    whole, resumed, _ = fit_whole_and_resumed(tmp_path, config, 5, 10)
    for key in RESUMED_STATE:
        assert differences(whole[key], resumed[key], key) == [], key


def copy_of_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.parametrize("which", ["last", "explicit path"])
def test_resuming_with_other_optimizer_settings_is_a_one_line_error(gan_runs, cli, tmp_path, which):
    """A resumed run continues with the checkpoint's optimizer and scheduler states (their lr, betas, step
    counts): a config that changes them is refused rather than recorded as if it had been used."""
    run_dir = copy_of_run(gan_runs[2], tmp_path)
    ckpt = "last" if which == "last" else run_dir / "checkpoints" / "last.ckpt"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, _, err = cli(
        "fit", "--config", run_dir / "config.yaml", "--run.dir", run_dir, "--ckpt_path", ckpt,
        "--trainer.max_steps", 18, "--model.init_args.discriminator_lr_scheduler.init_args.gamma", 0.5,
        "--model.init_args.generator_optimizer", "torch.optim.SGD",
        "--model.init_args.generator_optimizer.init_args.lr", 0.01,
    )  # fmt: skip
    assert code == 2, err
    assert err.strip().count("\n") == 0 and err.startswith("lit_gen: error: ckpt_path:")
    assert "model.discriminator_lr_scheduler.init_args.gamma: 0.9 -> 0.5" in err
    assert "model.generator_optimizer: 'lit_gen.models.gan._adam_dcgan' -> 'torch.optim.SGD'" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_ckpt_path_last_names_the_model_arguments_the_config_changes(gan_runs, tmp_path):
    run_dir = copy_of_run(gan_runs[2], tmp_path)
    with pytest.warns(
        UserWarning, match=r"differ from the checkpoint's in ema_decay; the config's values are used"
    ):
        run(
            "fit", "--config", run_dir / "config.yaml", "--run.dir", run_dir, "--ckpt_path", "last",
            "--trainer.max_steps", 16, "--model.init_args.ema_decay", 0.5,
        )  # fmt: skip
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 16 and resumed["hyper_parameters"]["ema_decay"] == 0.5
