"""The progress bar ``fit`` shows: lit_gen's ``ProgressBar`` (Lightning's TQDM bar, redrawn at most every
``min_interval`` seconds) unless the config chooses a bar or turns it off."""

from __future__ import annotations

import re

import pytest
from helpers.configs import TINY_TOY_GAN, write_config
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

from lit_gen.callbacks import ProgressBar
from lit_gen.cli import LitGenCLI
from lit_gen.data import Ring
from lit_gen.models import GAN
from lit_gen.nets import MLPDiscriminator, MLPGenerator


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], ProgressBar),
        (["--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"], TQDMProgressBar),
        (["--trainer.enable_progress_bar", "false"], type(None)),
    ],
    ids=["default", "config-chooses-one", "off"],
)
def test_fit_uses_the_throttled_bar_unless_the_config_chooses_one(tmp_path, args, expected):
    config = write_config(tmp_path / "toy.yaml", TINY_TOY_GAN.replace("enable_progress_bar: false", ""))
    cli = LitGenCLI(
        args=[
            "fit",
            "--config",
            str(config),
            "--run.root",
            str(tmp_path / "runs"),
            "--trainer.max_steps",
            "2",
            *args,
        ]
    )
    assert type(cli.trainer.progress_bar_callback) is expected
    bars = [c for c in cli.trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert len(bars) == (0 if expected is type(None) else 1)


def test_bar_redraws_at_most_every_min_interval_and_on_the_last_batch(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("lit_gen.callbacks.progress.time.monotonic", lambda: now[0])
    bar = ProgressBar(min_interval=1.0)
    redraws = []
    for current, t in enumerate([100.0, 100.5, 100.9, 101.2, 101.3, 101.4], start=1):
        now[0] = t
        if bar.should_redraw(current, total=6):
            redraws.append(current)
    assert redraws == [1, 4, 6]  # first batch, 1.2 s after it, the last batch
    every_other = ProgressBar(refresh_rate=2, min_interval=0.0)
    assert [n for n in range(1, 6) if every_other.should_redraw(n, total=5)] == [2, 4, 5]


def fit_with_bar(bar: ProgressBar, model: GAN, num_train: int, **limits) -> None:
    """Fits ``model`` on the ring (batches of 8) with ``bar`` as the only callback: no logger, checkpoints or
    validation."""
    trainer = Trainer(
        accelerator="cpu",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
        **limits,
    )
    trainer.fit(model, datamodule=Ring(num_train=num_train, num_val=8, batch_size=8))


def test_a_fit_redraws_the_bar_once_per_redraw_with_the_metrics():
    class CountingBar(ProgressBar):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.postfixes: list[dict] = []

        def get_metrics(self, trainer, pl_module):
            metrics = super().get_metrics(trainer, pl_module)
            self.postfixes.append(dict(metrics))
            return metrics

    bar = CountingBar(min_interval=3600.0)
    model = GAN(
        MLPGenerator(latent_dim=2, hidden=[8]), MLPDiscriminator(data_dim=2, hidden=[8]), noise_seed=0
    )
    fit_with_bar(bar, model, num_train=200, max_epochs=1, limit_train_batches=7, log_every_n_steps=50)
    # batch 1 and batch 7 (the last) during the epoch, then Lightning's own redraw at the epoch's end
    assert bar.train_progress_bar.n == 7
    assert len(bar.postfixes) == 3
    # the GAN logs the bar's losses on its last batch, although log_every_n_steps is larger than the epoch
    assert {"d_loss", "g_loss"} <= set(bar.postfixes[1])


@pytest.mark.parametrize("n_critic", [1, 2, 5])
def test_gan_converts_optimizer_steps_to_batches(n_critic):
    model = GAN(
        MLPGenerator(latent_dim=2, hidden=[4]), MLPDiscriminator(data_dim=2, hidden=[4]), n_critic=n_critic
    )
    for seen in range(2 * n_critic + 1):
        model.batches_seen.fill_(seen)
        for steps in range(4 * n_critic):
            # what training_step does: a D step every batch, a G step when batches_seen % n_critic == n_critic - 1
            batches, made = 0, 0
            while made < steps:
                made += 1 + ((seen + batches) % n_critic == n_critic - 1)
                batches += 1
            assert model.batches_for_optimizer_steps(steps) == batches, (seen, steps)


def test_a_gans_last_partial_epoch_ends_with_a_full_bar():
    bar = ProgressBar(min_interval=0.0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=[8]), MLPDiscriminator(data_dim=2, hidden=[8]))
    # 10 batches an epoch; max_steps 26 = 13 batches of a D and a G step: the second epoch has 3 batches
    fit_with_bar(bar, model, num_train=80, max_steps=26)
    assert int(model.batches_seen) == 13
    assert bar.train_progress_bar.n == bar.train_progress_bar.total == 3


class DescribingBar(ProgressBar):
    """Records the bar's description at each redraw."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.descriptions: list[str] = []

    def describe(self, trainer) -> str:
        self.descriptions.append(super().describe(trainer))
        return self.descriptions[-1]


def test_the_bar_shows_the_runs_progress_and_its_eta(monkeypatch):
    clock = iter(range(1000))  # one second later at every look at the clock
    monkeypatch.setattr("lit_gen.callbacks.progress.time.monotonic", lambda: float(next(clock)))
    bar = DescribingBar(min_interval=0.0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=[8]), MLPDiscriminator(data_dim=2, hidden=[8]))
    fit_with_bar(bar, model, num_train=80, max_steps=26)  # 13 batches of 2 steps, over 2 epochs
    parsed = [re.fullmatch(r"Epoch (\d) \[step (\d+)/26, ETA (\d):(\d\d)\]", d) for d in bar.descriptions]
    assert all(parsed), bar.descriptions
    assert [int(m[2]) for m in parsed] == list(range(2, 27, 2))
    assert [int(m[1]) for m in parsed] == [0] * 10 + [1] * 3
    etas = [60 * int(m[3]) + int(m[4]) for m in parsed]
    assert etas[0] > 0 and etas == sorted(etas, reverse=True) and etas[-1] == 0


def test_without_max_steps_the_bar_counts_epochs():
    bar = DescribingBar(min_interval=0.0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=[8]), MLPDiscriminator(data_dim=2, hidden=[8]))
    fit_with_bar(bar, model, num_train=80, max_epochs=2)
    assert bar.descriptions[0].startswith("Epoch 0 [5% of 2 epochs, ETA ")
    assert bar.descriptions[-1] == "Epoch 1 [100% of 2 epochs, ETA 0:00]"
