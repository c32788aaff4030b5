"""Pins every private Lightning attribute ``lit_gen/_lightning.py`` reads: a Lightning upgrade that moves one
fails here, next to the function that needs fixing."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.strategies import DDPStrategy

from lit_gen._lightning import (
    attached_trainer,
    batches_done,
    ddp_kwargs,
    epoch_batches_done,
    should_update_logs,
)


def tiny_trainer(**kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )


# --- models ---


def test_attached_trainer_is_none_outside_a_fit_and_the_trainer_once_attached():
    module = LightningModule()
    assert attached_trainer(module) is None
    trainer = tiny_trainer()
    module.trainer = trainer
    assert attached_trainer(module) is trainer


def test_should_update_logs_is_lightnings_every_log_every_n_steps_test():
    seen = []

    class Recording(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append(should_update_logs(self.trainer))
            return super().training_step(batch, batch_idx)

    tiny_trainer(max_steps=6, log_every_n_steps=3).fit(Recording())
    assert seen == [False, False, True, False, False, True]


def test_ddp_kwargs_is_the_live_dict_the_strategy_hands_to_ddp():
    strategy = DDPStrategy(find_unused_parameters=False, static_graph=True)
    assert ddp_kwargs(strategy) == {"find_unused_parameters": False, "static_graph": True}
    ddp_kwargs(strategy)["find_unused_parameters"] = True
    assert ddp_kwargs(strategy)["find_unused_parameters"] is True
    # what `--trainer.strategy ddp` builds: no find_unused_parameters, which the GAN then sets
    # (tests/test_ddp.py trains the GAN under DDP with it)
    assert "find_unused_parameters" not in ddp_kwargs(DDPStrategy())


def test_batches_done_counts_the_fits_batches_and_epoch_batches_done_this_epochs():
    seen = []

    class Counts(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append((batches_done(trainer), epoch_batches_done(trainer)))

    trainer = tiny_trainer(max_epochs=2, limit_train_batches=3, callbacks=[Counts()])
    trainer.fit(BoringModel())
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 1), (5, 2), (6, 3)]
    assert batches_done(trainer) == 6
