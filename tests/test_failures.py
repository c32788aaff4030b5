"""Failures that must lose nothing: SIGTERM / Ctrl-C mid-run leave a resumable checkpoint (and the resumed run
equals an uninterrupted one), checkpoint writes are atomic, truncated / corrupt / code-carrying checkpoints are
one-line errors, and a non-finite loss stops the run naming the step and the term (or is skipped, if set)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.runners import lightning_log, run, subprocess_env
from helpers.runs import differences, last_checkpoint
from lightning.pytorch import Callback

from lit_gen.checkpoints import SafeCheckpointIO, atomic_torch_save

CONFIG = """
seed_everything: 1
trainer:
  accelerator: cpu
  devices: 1
  max_steps: {max_steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks: {callbacks}
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.MLPGenerator
      init_args: {{latent_dim: 2, hidden: [16, 16], data_dim: 2}}
    discriminator:
      class_path: lit_gen.nets.MLPDiscriminator
      init_args: {{data_dim: 2, hidden: [16, 16]}}
    ema_decay: 0.9
data:
  class_path: lit_gen.data.Ring
  init_args: {{num_train: 64, num_val: 16, batch_size: 8}}
checkpoint:
  every_n_train_steps: 2
"""


def write_config(path: Path, max_steps: int = 8, callbacks: str = "[]") -> Path:
    path.write_text(CONFIG.format(max_steps=max_steps, callbacks=callbacks))
    return path


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("lit_gen: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- stopping by signal ------------------------------------------------------------------------------------------


def start_fit(config: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LIT_GEN_RUN_DIR", None)
    command = [sys.executable, "-m", "lit_gen", "fit", "--config", str(config), "--run.root", str(root)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(process: subprocess.Popen, root: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(root.glob("*/*/checkpoints/epoch=*.ckpt")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_and_ctrl_c_stop_after_a_batch_with_a_checkpoint_that_resumes_exactly(tmp_path):
    config = write_config(tmp_path / "gan.yaml", max_steps=100_000)
    runs = {signal.SIGTERM: tmp_path / "term", signal.SIGINT: tmp_path / "int"}
    processes = {signum: start_fit(config, root) for signum, root in runs.items()}  # side by side: 2 cores
    for signum, process in processes.items():
        wait_for_checkpoint(process, runs[signum])
        process.send_signal(signum)
    for signum, process in processes.items():
        _, err = process.communicate(timeout=120)
        assert process.returncode == 128 + signum, err
        assert f"stopped by {signal.Signals(signum).name}" in err and "--ckpt_path last" in err
        assert "Traceback" not in err

    # resume the SIGTERM run 4 optimizer steps further; an uninterrupted run to that step must equal it
    stopped = last_checkpoint(runs[signal.SIGTERM])
    target = stopped["global_step"] + 4
    (run_dir,) = runs[signal.SIGTERM].glob("*/*")
    with lightning_log() as messages:
        run("fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last", "--trainer.max_steps", target)
    # it really resumed (a fresh start would end equal too)
    assert any(m.startswith("Restoring states from the checkpoint path at") for m in messages), messages
    run("fit", "--config", config, "--run.root", tmp_path / "whole", "--trainer.max_steps", target)
    resumed, whole = last_checkpoint(runs[signal.SIGTERM]), last_checkpoint(tmp_path / "whole")
    assert resumed["global_step"] == whole["global_step"] == target
    for key in ("state_dict", "optimizer_states", "rng_states", "loops"):
        assert differences(whole[key], resumed[key], key) == [], key
    assert last_checkpoint(runs[signal.SIGINT])["global_step"] > 0


# --- checkpoint files --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    run("fit", "--config", write_config(tmp / "gan.yaml", max_steps=4), "--run.root", tmp / "runs")
    (run_dir,) = (tmp / "runs").glob("*/*")
    return run_dir


def test_truncated_or_corrupt_checkpoint_is_a_one_line_error(finished_run, cli, tmp_path):
    data = (finished_run / "checkpoints/last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    config = finished_run / "config.yaml"
    for bad in (truncated, garbage):
        line = one_line_error(*cli("fit", "--config", config, "--ckpt_path", bad)[::2])
        assert "ckpt_path" in line and str(bad) in line and "not a lit_gen checkpoint" in line
        assert line.endswith("it was not loaded") and "weights_only" not in line
    # `--ckpt_path last` resolves to the run's last.ckpt inside the trainer: the same one-line error there
    run_dir = tmp_path / "copy"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints/last.ckpt").write_bytes(data[: len(data) // 3])
    code, _, err = cli(
        "fit", "--config", config, "--run.dir", run_dir, "--checkpoint.dirpath", run_dir / "checkpoints",
        "--ckpt_path", "last",
    )  # fmt: skip
    assert "not a lit_gen checkpoint" in one_line_error(code, err)


class _RunsCode:
    """A pickle that would run code when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_loading_never_executes_code_from_the_file(finished_run, cli, tmp_path):
    marker = tmp_path / "code-was-executed"
    evil = tmp_path / "evil.ckpt"
    checkpoint = torch.load(finished_run / "checkpoints/last.ckpt", weights_only=True)
    checkpoint["payload"] = _RunsCode(marker)
    torch.save(checkpoint, evil)
    line = one_line_error(*cli("fit", "--config", finished_run / "config.yaml", "--ckpt_path", evil)[::2])
    # what it is and that it was not loaded; never torch's advice to load it with weights_only=False
    assert f"'{evil}' is not a lit_gen checkpoint: it carries code" in line and "not loaded" in line
    assert "weights_only" not in line
    with pytest.raises(Exception, match="carries code"):
        SafeCheckpointIO().load_checkpoint(evil)
    code, _, err = cli("sample", "--ckpt_path", evil, "--out_dir", tmp_path / "out")
    assert "carries code" in one_line_error(code, err)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def crash_mid_write(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        SafeCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_checkpoints_and_sample_images_get_the_umask_mode(tmp_path):
    """A lab shares runs: with umask 022 the files are 0644 like any other new file (not the temp file's 0600)."""
    from lit_gen.sampling import write_samples

    previous = os.umask(0o022)
    try:
        atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
        SafeCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "step.ckpt")
        written = write_samples(torch.rand(4, 1, 8, 8), tmp_path / "samples")
        os.umask(0o077)
        atomic_torch_save({"step": 2}, tmp_path / "private.ckpt")
    finally:
        os.umask(previous)
    files = [
        tmp_path / "last.ckpt",
        tmp_path / "checkpoints" / "step.ckpt",
        *[p for p in written if p.is_file()],
    ]
    assert {p.name for p in files} >= {"last.ckpt", "step.ckpt", "samples.pt", "grid.png"}
    for path in files:
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path
    assert oct((tmp_path / "private.ckpt").stat().st_mode & 0o777) == oct(0o600)


# --- non-finite losses -------------------------------------------------------------------------------------------


class PoisonBatch(Callback):
    """Puts a NaN into the real data of one training batch."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1 == self.batch:
            batch[0][0, 0] = float("nan")


POISON_AT_4 = "[{class_path: test_failures.PoisonBatch, init_args: {batch: 4}}]"


# the GAN logs its metrics every log_every_n_steps batches: the poisoned batch 4 logs them (1) or not (50)
@pytest.mark.parametrize("log_every_n_steps", [1, 50], ids=["logging-batch", "non-logging-batch"])
def test_non_finite_loss_stops_naming_step_and_term_and_keeps_the_last_good_checkpoint(
    cli, tmp_path, log_every_n_steps
):
    config = write_config(tmp_path / "gan.yaml", max_steps=20, callbacks=POISON_AT_4)
    code, _, err = cli("fit", "--config", config, "--trainer.log_every_n_steps", log_every_n_steps)
    line = one_line_error(code, err)
    assert "non-finite training loss at batch 4" in line and "global step 10" in line
    assert "train/d_loss" in line and "last good checkpoint" in line
    last = last_checkpoint(Path("runs"))
    assert last["global_step"] == 8  # batches 0-3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_non_finite_steps_can_be_skipped_and_counted(cli, tmp_path):
    config = write_config(tmp_path / "gan.yaml", max_steps=12, callbacks=POISON_AT_4)
    code, _, err = cli("fit", "--config", config, "--nonfinite.max_skips", 2)
    assert code == 0, err
    last = last_checkpoint(Path("runs"))
    assert last["global_step"] == 12
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    # the D step of batch 4 was skipped: Adam's step count of D is one behind G's
    steps = [int(next(iter(s["state"].values()))["step"]) for s in last["optimizer_states"]]
    assert steps == [6, 5]
    (metrics,) = Path("runs").glob("*/*/csv/metrics.csv")
    assert "train/skipped_steps" in metrics.read_text().splitlines()[0]


# batch 3 stops mid-epoch, batch 7 on an epoch's last batch (Lightning 2.6 alone resumes that one with its epoch
# counters one behind; Checkpoint.on_train_start corrects it)
@pytest.mark.parametrize("batch", [3, 7], ids=["mid-epoch", "last-batch-of-epoch"])
def test_a_signal_stop_resumes_exactly(tmp_path, batch):
    callbacks = f"[{{class_path: helpers.callbacks.SignalAtBatchStart, init_args: {{batch: {batch}}}}}]"
    config = write_config(tmp_path / "gan.yaml", max_steps=100, callbacks=callbacks)
    command = [
        sys.executable,
        "-m",
        "lit_gen",
        "fit",
        "--config",
        str(config),
        "--run.root",
        str(tmp_path / "term"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=subprocess_env())
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    stopped = last_checkpoint(tmp_path / "term")
    assert stopped["global_step"] == 2 * (batch + 1)  # one D and one G step per batch
    target = stopped["global_step"] + 2 * 10  # 10 batches on: across the next epoch boundary too
    (run_dir,) = (tmp_path / "term").glob("*/*")
    plain = write_config(
        tmp_path / "plain.yaml", max_steps=100
    )  # the same run without the signalling callback
    checkpoints = run_dir / "checkpoints"
    run("fit", "--config", plain, "--run.dir", run_dir, "--checkpoint.dirpath", checkpoints, "--ckpt_path", "last",
        "--trainer.max_steps", target)  # fmt: skip
    run("fit", "--config", plain, "--run.root", tmp_path / "whole", "--trainer.max_steps", target)
    resumed, whole = last_checkpoint(tmp_path / "term"), last_checkpoint(tmp_path / "whole")
    assert resumed["global_step"] == whole["global_step"] == target
    for key in ("state_dict", "optimizer_states", "rng_states", "loops"):
        assert differences(whole[key], resumed[key], key) == [], key


# the VAE and the VQ-VAE return their loss terms on every batch, like the GAN and the GPT, so a NaN on a batch that
# does not log (log_every_n_steps 50) still stops the fit at that batch
@pytest.mark.parametrize("family", ["vae", "vqvae"])
def test_a_non_finite_vae_or_vqvae_loss_on_a_batch_that_does_not_log_stops_the_fit(
    family, cli, cifar10_dir, cifar10_skip_md5
):
    from helpers.paths import CONFIGS

    poison = "[{class_path: helpers.callbacks.PoisonFirstParameter, init_args: {batch: 3}}]"
    if family == "vae":
        data = [CONFIGS / "vae.yaml"]
    else:
        data = [CONFIGS / "vqvae_cifar10.yaml", f"--data.data_dir={cifar10_dir}", "--data.download=false"]
        data += ["--data.num_workers=0", "--data.batch_size=8"]
    code, _, err = cli(
        "fit",
        "--config",
        *data,
        "--trainer.logger=CSVLogger",
        "--trainer.max_steps=10",
        "--trainer.log_every_n_steps=50",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks",
        poison,
    )
    line = one_line_error(code, err)
    assert "non-finite training loss at batch 3" in line and "train/" in line, line
