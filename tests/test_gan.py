"""The GAN LightningModule driven by a real (tiny) Trainer: player isolation, n_critic counting, what
``global_step`` counts, EMA maths, schedulers, noise streams and logged values."""

from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from lit_gen.data import Digits, GaussianMixture, Ring
from lit_gen.errors import LitGenError
from lit_gen.losses import R1, WGANGP, Wasserstein
from lit_gen.metrics.functional import frechet_distance
from lit_gen.models import GAN
from lit_gen.models.gan import NoiseStream
from lit_gen.nets import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator


def toy_gan(pack: int = 1, **kwargs) -> GAN:
    generator = MLPGenerator(latent_dim=2, hidden=[8, 8])
    discriminator = MLPDiscriminator(data_dim=2 * pack, hidden=[8, 8])
    return GAN(generator, discriminator, pack=pack, noise_seed=0, **kwargs)


def image_gan(**kwargs) -> GAN:
    """8 px DCGAN with BatchNorm in both nets (so the EMA's buffers matter)."""
    generator = DCGANGenerator(latent_dim=4, channels=1, image_size=8, width=4)
    discriminator = DCGANDiscriminator(channels=1, image_size=8, width=4)
    return GAN(generator, discriminator, noise_seed=0, **kwargs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def all_changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(not torch.equal(a[k], b[k]) for k in a)


class StepRecorder(Callback):
    """Records every optimizer step of either player with the parameters of both players before and after it
    (torch's optimizer step hooks, so nothing in the module under test is changed)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        opt_g, opt_d = trainer.optimizers
        for player, opt in (("G", opt_g), ("D", opt_d)):
            opt.register_step_pre_hook(partial(self._pre, player, pl_module))
            opt.register_step_post_hook(partial(self._post, pl_module))

    def _pre(self, player, module, optimizer, args, kwargs) -> None:
        self.events.append(
            {"player": player, "g": snapshot(module.generator), "d": snapshot(module.discriminator)}
        )

    def _post(self, module, optimizer, args, kwargs) -> None:
        self.events[-1].update(g_after=snapshot(module.generator), d_after=snapshot(module.discriminator))

    def players(self) -> list[str]:
        return [e["player"] for e in self.events]


def fit(
    model: GAN, datamodule=None, batches: int | None = None, max_steps: int = -1, callbacks=()
) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1 if batches is not None else -1,
        max_steps=max_steps,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=datamodule or Ring(num_train=2_000, num_val=10, batch_size=8))
    return trainer


# --- player isolation ----------------------------------------------------------------------------------------


def test_a_d_step_leaves_g_unchanged_and_a_g_step_leaves_d_unchanged():
    recorder = StepRecorder()
    fit(toy_gan(n_critic=2, ema_decay=None), batches=4, callbacks=[recorder])
    # n_critic = 2: batch 0 is D-only, batch 1 is D then G, and so on
    assert recorder.players() == ["D", "D", "G", "D", "D", "G"]
    for event in recorder.events:
        if event["player"] == "D":
            assert same(event["g"], event["g_after"]), "a discriminator step changed the generator"
            assert all_changed(event["d"], event["d_after"]), "a discriminator step left D unchanged"
        else:
            assert same(event["d"], event["d_after"]), "a generator step changed the discriminator"
            assert all_changed(event["g"], event["g_after"]), "a generator step left G unchanged"
    # and nothing changes either player between optimizer steps
    for before, after in zip(recorder.events, recorder.events[1:]):
        assert same(before["g_after"], after["g"]) and same(before["d_after"], after["d"])


def test_players_are_untoggled_after_training():
    model = toy_gan(n_critic=2, ema_decay=None)
    fit(model, batches=3)
    assert all(p.requires_grad for p in model.generator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())


# --- n_critic and global_step --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_critic", "batches"), [(1, 3), (2, 5), (3, 7)])
def test_n_critic_counting_and_global_step(n_critic, batches):
    recorder = StepRecorder()
    model = toy_gan(n_critic=n_critic, ema_decay=None)
    trainer = fit(model, batches=batches, callbacks=[recorder])
    assert recorder.players().count("D") == batches
    assert recorder.players().count("G") == batches // n_critic
    # Lightning counts every optimizer step: global_step = D steps + G steps
    assert trainer.global_step == batches + batches // n_critic
    assert int(model.batches_seen) == batches


@pytest.mark.parametrize(("n_critic", "max_steps", "batches"), [(1, 6, 3), (5, 12, 10)])
def test_max_steps_means_what_the_config_comments_say(n_critic, max_steps, batches):
    """The shipped configs' comments: n_critic 1 -> 2 steps per batch; n_critic 5 -> 6 steps per 5 batches."""
    recorder = StepRecorder()
    model = toy_gan(n_critic=n_critic, ema_decay=None)
    trainer = fit(model, max_steps=max_steps, callbacks=[recorder])
    assert trainer.global_step == max_steps
    assert int(model.batches_seen) == batches
    assert recorder.players().count("G") == batches // n_critic


def test_bad_arguments_name_the_key():
    with pytest.raises(LitGenError, match="model.n_critic"):
        toy_gan(n_critic=0)
    with pytest.raises(LitGenError, match="model.pack"):
        toy_gan(pack=0)
    with pytest.raises(LitGenError, match="model.ema_decay"):
        toy_gan(ema_decay=1.0)
    with pytest.raises(LitGenError, match="model.ema_rampup"):
        toy_gan(ema_rampup=0.0)
    with pytest.raises(LitGenError, match="latent_dim"):
        GAN(torch.nn.Linear(2, 2), MLPDiscriminator(hidden=[4]))


# --- EMA -----------------------------------------------------------------------------------------------------


def test_update_ema_is_the_decay_weighted_average_and_leaves_batchnorm_statistics_alone():
    model = image_gan(ema_decay=0.75, ema_rampup=None)
    params = dict(model.generator.named_parameters())
    ema_params = dict(model.generator_ema.module.named_parameters())
    ema_buffers = {k: v.clone() for k, v in model.generator_ema.module.named_buffers()}
    with torch.no_grad():
        for p in params.values():
            p.fill_(1.0)
    model.update_ema()  # the first update copies the weights
    with torch.no_grad():
        for p in params.values():
            p.fill_(3.0)
        for buffer in model.generator.buffers():
            buffer.fill_(7)
    model.update_ema()
    for name, p in ema_params.items():
        assert torch.allclose(p, torch.full_like(p, 0.75 * 1.0 + 0.25 * 3.0)), name
    # the live generator's BatchNorm statistics do not belong to the EMA weights: not copied
    for name, b in model.generator_ema.module.named_buffers():
        assert torch.equal(b, ema_buffers[name]), name
    assert all(not p.requires_grad for p in ema_params.values())


def test_ema_rampup_shortens_the_half_life_early_in_training():
    model = toy_gan(ema_decay=0.9999, ema_rampup=0.05)
    assert model.ema_decay_at(0) == 0.0  # the first update copies
    assert model.ema_decay_at(20) == pytest.approx(0.5)  # half-life 0.05 x 20 = 1 step
    assert model.ema_decay_at(2000) == pytest.approx(0.5 ** (1 / 100))
    # half-life of 0.9999: ln 2 / -ln 0.9999 = 6931 steps, reached after 138,620 steps
    assert model.ema_decay_at(200_000) == 0.9999
    assert toy_gan(ema_decay=0.9999, ema_rampup=None).ema_decay_at(20) == 0.9999


@pytest.mark.parametrize("rampup", [None, 0.5])
def test_ema_after_training_matches_the_average_computed_by_hand(rampup):
    decay = 0.8
    recorder = StepRecorder()
    model = image_gan(ema_decay=decay, ema_rampup=rampup)
    fit(model, datamodule=Digits(image_size=8, batch_size=8), batches=4, callbacks=[recorder])
    after_g_steps = [e["g_after"] for e in recorder.events if e["player"] == "G"]
    assert len(after_g_steps) == 4
    expected = dict(after_g_steps[0])
    for t, params in enumerate(after_g_steps[1:], start=1):
        # rampup 0.5: half-lives 0.5, 1, 1.5 steps -> decays 0.25, 0.5, 0.63, all under 0.8
        d = decay if rampup is None else min(decay, 0.5 ** (1 / (rampup * t)))
        expected = {k: d * expected[k] + (1 - d) * params[k] for k in expected}
    ema = dict(model.generator_ema.module.named_parameters())
    for name, value in expected.items():
        assert torch.allclose(ema[name], value, atol=1e-6), name
        assert not torch.allclose(ema[name], after_g_steps[-1][name]), f"{name}: EMA equals the live weights"


def test_ema_batchnorm_statistics_are_those_of_the_ema_weights():
    model = image_gan(ema_decay=0.9, ema_rampup=None)
    fit(model, datamodule=Digits(image_size=8, batch_size=8), batches=6)
    model.generate(4, rng=torch.Generator().manual_seed(0))
    ema = model.generator_ema.module
    # the statistics of each BatchNorm layer's input under the EMA weights, over many latents
    inputs: dict[str, list[torch.Tensor]] = {}
    norms = {name: m for name, m in ema.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    reference = copy.deepcopy(ema).train()
    hooks = [
        m.register_forward_pre_hook(lambda m, args, name=name: inputs.setdefault(name, []).append(args[0]))
        for name, m in reference.named_modules()
        if name in norms
    ]
    with torch.no_grad():
        reference(torch.randn(4096, model.latent_dim, generator=torch.Generator().manual_seed(1)))
    for hook in hooks:
        hook.remove()
    assert norms
    for name, m in norms.items():
        x = inputs[name][0].transpose(0, 1).flatten(1)
        scale = x.std(dim=1).mean()
        assert torch.allclose(m.running_mean, x.mean(dim=1), atol=0.05 * scale), name
        assert torch.allclose(m.running_var, x.var(dim=1), rtol=0.1), name
    # the live generator keeps its own (training) statistics
    live = dict(model.generator.named_buffers())
    assert any(not torch.equal(live[k], b) for k, b in ema.named_buffers() if k.endswith("running_mean"))


def test_ema_generator_is_not_far_worse_than_the_live_one_early_in_training():
    """With a slow EMA (0.999) and no ramp-up the EMA generator is mostly its random initialisation for the
    first thousands of steps; with the default ramp-up it stays close to the live generator. The data: one
    Gaussian away from the origin, which the live generator learns in a few dozen steps."""
    data = GaussianMixture([[2.0, 2.0]], std=0.5, num_train=12_800, num_val=10, batch_size=64)
    data.setup()
    real = data.train_set.tensors[0]
    real_mean, real_cov = real.mean(0), real.T.cov()

    def fd(points: torch.Tensor) -> float:
        return float(frechet_distance(points.mean(0), points.T.cov(), real_mean, real_cov))

    distances: list[tuple[float, float]] = []

    class Compare(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if (batch_idx + 1) % 25 == 0:
                rng = partial(torch.Generator().manual_seed, 0)
                ema, live = pl_module.generate(2000, rng()), pl_module.generate(2000, rng(), ema=False)
                distances.append((fd(ema), fd(live)))

    torch.manual_seed(0)
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    model = GAN(
        MLPGenerator(latent_dim=2, hidden=[32, 32]),
        MLPDiscriminator(data_dim=2, hidden=[32, 32]),
        ema_decay=0.999,
        generator_optimizer=adam,
        discriminator_optimizer=adam,
        noise_seed=0,
    )
    fit(model, datamodule=data, batches=200, callbacks=[Compare()])
    assert len(distances) == 8
    for ema, live in distances:
        assert ema <= 2.0 * live + 0.5, distances


def test_generate_uses_the_ema_generator_unless_told_otherwise():
    model = image_gan(ema_decay=0.9, ema_rampup=None)
    fit(model, datamodule=Digits(image_size=8, batch_size=8), batches=3)
    ema = model.generate(4, rng=torch.Generator().manual_seed(0))
    live = model.generate(4, rng=torch.Generator().manual_seed(0), ema=False)
    assert ema.shape == live.shape == (4, 1, 8, 8)
    assert 0.0 <= ema.min() and ema.max() <= 1.0
    assert not torch.allclose(ema, live)
    assert torch.equal(ema, model.generate(4, rng=torch.Generator().manual_seed(0)))
    assert model.generator.training, "generate must restore train mode"
    no_ema = toy_gan(ema_decay=None)
    assert no_ema.generator_ema is None and no_ema.sampling_generator is no_ema.generator


# --- schedulers, penalties, packing, logging ------------------------------------------------------------------


def test_schedulers_step_after_each_step_of_their_player():
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    adam = partial(torch.optim.Adam, lr=0.1)
    model = toy_gan(
        n_critic=2,
        ema_decay=None,
        generator_optimizer=adam,
        discriminator_optimizer=adam,
        generator_lr_scheduler=step_lr,
        discriminator_lr_scheduler=step_lr,
    )
    trainer = fit(model, batches=4)
    opt_g, opt_d = trainer.optimizers
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)  # 4 D steps
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)  # 2 G steps
    assert trainer.callback_metrics["train/lr_g"].item() == pytest.approx(0.1 * 0.5**2)


def test_wgan_gp_training_logs_every_value():
    model = toy_gan(loss=Wasserstein(), penalty=WGANGP(weight=10.0), n_critic=1, ema_decay=0.9)
    trainer = fit(model, batches=2)
    metrics = trainer.callback_metrics
    for key in ("d_loss", "g_loss", "D_real", "D_fake", "gradient_penalty", "lr_g", "lr_d"):
        assert f"train/{key}" in metrics, key
        assert torch.isfinite(metrics[f"train/{key}"]), key
    assert metrics["train/gradient_penalty"] > 0


def test_pacgan_packs_samples_and_drops_the_remainder():
    seen: list[tuple[int, ...]] = []

    class RecordInputs(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            pl_module.discriminator.register_forward_pre_hook(
                lambda m, args: seen.append(tuple(args[0].shape))
            )

    model = toy_gan(pack=4, ema_decay=None)
    fit(
        model,
        datamodule=Ring(num_train=200, num_val=10, batch_size=10),
        batches=1,
        callbacks=[RecordInputs()],
    )
    # a batch of 10 keeps 8 points = 2 packed inputs of 4 x 2 features, for real, fake and G's step
    assert seen == [(2, 8)] * 3


# --- noise -----------------------------------------------------------------------------------------------------


def test_noise_is_distinct_per_rank_batch_and_stream_and_reproducible():
    model = toy_gan()
    first = model.latents(16)
    assert torch.equal(first, model.batch_noise(NoiseStream.LATENTS, (16, 2)))
    assert not torch.equal(first, model.batch_noise(NoiseStream.PENALTY_MIX, (16, 2)))
    model.batches_seen += 1
    assert not torch.equal(first, model.latents(16))
    model.batches_seen -= 1
    model._trainer = SimpleNamespace(global_rank=1, world_size=2)  # what another DDP rank sees
    assert not torch.equal(first, model.latents(16))
    model._trainer = SimpleNamespace(global_rank=0, world_size=1)
    assert torch.equal(first, model.latents(16))
    # two ranks with batch 8 take alternate rows of the one-process batch of 16
    halves = []
    for rank in (0, 1):
        model._trainer = SimpleNamespace(global_rank=rank, world_size=2)
        halves.append(model.latents(8))
    assert torch.equal(torch.stack(halves, dim=1).reshape(16, 2), first)


# --- shape check before training -----------------------------------------------------------------------------


def test_shape_mismatches_are_one_line_errors_before_training():
    with pytest.raises(LitGenError, match=r"model.generator: .*\(1, 8, 8\).*\(1, 16, 16\)"):
        fit(image_gan(), datamodule=Digits(image_size=16, batch_size=8), batches=1)
    mismatched_d = GAN(
        DCGANGenerator(latent_dim=4, channels=1, image_size=8, width=4),
        DCGANDiscriminator(channels=3, image_size=8, width=4),
    )
    with pytest.raises(LitGenError, match="model.discriminator: .*channels"):
        fit(mismatched_d, datamodule=Digits(image_size=8, batch_size=8), batches=1)
    with pytest.raises(LitGenError, match=r"model.discriminator: .*packed by 4"):
        fit(GAN(MLPGenerator(hidden=[4]), MLPDiscriminator(data_dim=2, hidden=[4]), pack=4), batches=1)


def test_shape_check_leaves_the_networks_untouched():
    model = image_gan()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.check_shapes(Digits(image_size=8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.generator.training and model.discriminator.training


@pytest.mark.parametrize("every_n_batches", [3, 4], ids=["end-between-logs", "end-on-a-log"])
def test_mode_metrics_log_every_n_batches_and_once_at_the_end(every_n_batches):
    from lightning.pytorch.loggers import Logger

    from lit_gen.callbacks import ModeMetrics

    class Recorder(Logger):
        name, version, experiment = "recorder", "0", None
        steps: list[int] = []

        def log_metrics(self, metrics, step=None):
            if "val/modes" in metrics:
                self.steps.append(step)

        def log_hyperparams(self, *args, **kwargs):
            pass

    recorder = Recorder()
    recorder.steps = []
    trainer = Trainer(
        accelerator="cpu",
        max_steps=16,  # 8 batches of a D and a G step
        limit_val_batches=0,
        logger=recorder,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModeMetrics(every_n_batches=every_n_batches, num_samples=50)],
    )
    model = GAN(MLPGenerator(latent_dim=2, hidden=[8]), MLPDiscriminator(data_dim=2, hidden=[8]))
    trainer.fit(model, datamodule=Ring(num_train=64, num_val=8, batch_size=8))
    assert recorder.steps == {3: [3, 6, 8], 4: [4, 8]}[every_n_batches]


# --- checkpoints -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_critic", "every"), [(1, 3), (2, 4), (5, 4)])
def test_a_checkpoint_is_saved_whenever_a_multiple_of_every_n_train_steps_is_reached_or_passed(
    tmp_path, n_critic, every
):
    """global_step advances by 2 on generator-step batches, so it can jump over a multiple of N."""
    from lit_gen.callbacks.reliability import Checkpoint

    batches = 15
    steps = [b + b // n_critic for b in range(1, batches + 1)]  # global_step after each batch
    checkpoint = Checkpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=every, save_top_k=-1)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps[-1],
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
    )
    trainer.fit(toy_gan(n_critic=n_critic, ema_decay=None), datamodule=Ring(num_train=400, batch_size=8))
    saved = sorted(int(p.stem.removeprefix("step=")) for p in tmp_path.glob("step=*.ckpt"))
    expected = sorted({min(s for s in steps if s >= k * every) for k in range(1, steps[-1] // every + 1)})
    assert saved == expected


# --- gradient penalties with PacGAN packing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("penalty", "key", "expected"),
    [
        (WGANGP(weight=10.0), "gradient_penalty", 0.0),  # ||grad|| = ||w|| = 1 on every packed input
        (R1(gamma=2.0), "r1_penalty", 1.0),  # gamma / 2 * ||w||^2
    ],
    ids=["wgan-gp", "r1"],
)
def test_gradient_penalties_are_computed_on_the_packed_inputs_d_reads(penalty, key, expected):
    """A linear D on packs of 2 points, w = (0.6, 0, 0, 0.8): the gradient of each D input has norm 1, those
    of the two members 0.6 and 0.8 (per member: WGAN-GP 10 x ((0.4^2 + 0.2^2) / 2) = 1, R1 halved)."""
    discriminator = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False), torch.nn.Flatten(0))
    with torch.no_grad():
        discriminator[0].weight.copy_(torch.tensor([[0.6, 0.0, 0.0, 0.8]]))
    model = GAN(
        MLPGenerator(latent_dim=2, hidden=[8]), discriminator, pack=2, penalty=penalty, ema_decay=None
    )
    trainer = fit(model, datamodule=Ring(num_train=200, num_val=10, batch_size=8), batches=1)
    assert trainer.callback_metrics[f"train/{key}"].item() == pytest.approx(expected, abs=1e-5)
