"""The private Lightning / jsonargparse / torchmetrics / torch names lit_gen uses live in
``lit_gen/_lightning.py`` only, and each behaviour they rely on is pinned here, one named test per internal: a
release that changes one fails its test, not a user's run.

The training-loop internals are pinned on tiny ``BoringModel`` fits (CPU, a few batches, some shared by
module-scoped fixtures)."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import os
import pickle
import re
import signal
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers.paths import ROOT
from jsonargparse import ArgumentError, ArgumentParser
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from lit_gen import _lightning
from lit_gen._lightning import (
    ConfigOverCheckpointCLI,
    attached_trainer,
    ddp_kwargs,
    parse_without_validation,
    should_update_logs,
)

# --- no private names elsewhere ----------------------------------------------------------------------------------

#: packages whose private names count: ``obj._x`` on their objects, ``from pkg import _x``, and ``self._x`` /
#: method overrides in subclasses of their classes where the base class defines ``_x``
THIRD_PARTY = (
    "lightning",
    "lightning_fabric",
    "pytorch_lightning",
    "jsonargparse",
    "torchmetrics",
    "torch",
    "wandb",
)

#: attributes holding Lightning's loops, private classes (``_FitLoop``...) although the attributes are not
LOOP_ATTRIBUTES = {"fit_loop", "validate_loop", "test_loop", "predict_loop", "epoch_loop"}

#: keys of Lightning's own in the hyper-parameters LightningCLI saves
CLI_HPARAMS_KEYS = {"_class_path", "_instantiator"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def _third_party_private_names(cls: type) -> set[str]:
    """The private attributes and methods the third-party classes in ``cls``'s MRO define (or set on ``self``)."""
    names: set[str] = set()
    for base in cls.__mro__:
        if (base.__module__ or "").split(".")[0] not in THIRD_PARTY:
            continue
        names |= {name for name in vars(base) if _is_private(name)}
        try:
            names |= set(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(base)))
        except (OSError, TypeError):
            pass
    return names


def private_names_used(path: Path, module: ModuleType) -> list[tuple[int, str]]:
    """(line, name) of each private third-party name the source ``path`` of ``module`` uses (see
    ``THIRD_PARTY``). Any ``obj._x`` where ``obj`` is not ``self`` / ``cls`` / ``super()`` counts, whatever
    ``obj`` is."""
    tree = ast.parse(path.read_text())
    enclosing: dict[int, type] = {}  # node id -> innermost class defined at module level
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and isinstance(getattr(module, node.name, None), type):
            for inner in ast.walk(node):
                enclosing[id(inner)] = getattr(module, node.name)
    found = []

    def on_object(node: ast.AST, obj: ast.expr, name: str) -> None:
        own = (isinstance(obj, ast.Name) and obj.id in ("self", "cls")) or (
            isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == "super"
        )
        if not own:
            found.append((node.lineno, name))
        elif id(node) in enclosing and name in _third_party_private_names(enclosing[id(node)]):
            found.append((node.lineno, name))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THIRD_PARTY:
            private_path = [part for part in node.module.split(".") if _is_private(part)]
            found += [(node.lineno, a.name) for a in node.names if _is_private(a.name)]
            found += [(node.lineno, part) for part in private_path]
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, part) for a in node.names for part in a.name.split(".") if _is_private(part)
            ]
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            on_object(node, node.value, node.attr)
        elif isinstance(node, ast.Attribute) and node.attr in LOOP_ATTRIBUTES:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Constant) and node.value in CLI_HPARAMS_KEYS:
            found.append((node.lineno, node.value))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            on_object(node, node.args[0], node.args[1].value)
        elif (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and id(node) in enclosing
            and _is_private(node.name)
            and node.name in _third_party_private_names(enclosing[id(node)])
        ):
            found.append((node.lineno, node.name))  # overrides a private method
    return found


def test_no_private_names_outside_the_lightning_module():
    unexpected = []
    for path in sorted((ROOT / "lit_gen").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "lit_gen/_lightning.py":
            continue
        module = importlib.import_module(
            relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        )
        unexpected += [f"{relative}:{line}: {name}" for line, name in private_names_used(path, module)]
    assert not unexpected, "private names outside lit_gen/_lightning.py:\n" + "\n".join(unexpected)


EXAMPLE = """
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar


class Checkpoint(ModelCheckpoint):
    def __init__(self):
        super().__init__()
        self._own = 1

    def saved(self, trainer):
        self._own_method(getattr(trainer, "_attach_id", None))
        return trainer._signal_connector, self._last_global_step_saved

    def _own_method(self, value):
        return value


class Bar(TQDMProgressBar):
    def _should_update(self, current, total):
        return True
"""


def test_the_check_finds_private_names(tmp_path):
    """The check itself: a private import, a private attribute of another object, a private attribute and a
    private method override of a Lightning base class; not a subclass's own private names."""
    path = tmp_path / "example.py"
    path.write_text(EXAMPLE)
    spec = importlib.util.spec_from_file_location("example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = sorted(name for _, name in private_names_used(path, module))
    assert found == sorted(
        [
            "_is_local_file_protocol",
            "_signal_connector",
            "_last_global_step_saved",
            "_should_update",
            "_attach_id",
        ]
    )


# --- callbacks ---------------------------------------------------------------------------------------------------


def tiny_fit(tmp_path: Path, callbacks: list[Callback], **trainer_kwargs) -> Trainer:
    """Fits a ``BoringModel`` (64 batches an epoch) on the CPU without logger or validation."""
    kwargs = {"max_steps": 4, "enable_checkpointing": False, **trainer_kwargs}
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )
    trainer.fit(BoringModel())
    return trainer


class CheckpointProbe(Callback):
    """Calls the ModelCheckpoint internals on ``checkpoint`` at chosen batches and records what they did."""

    def __init__(self, checkpoint: ModelCheckpoint, missing_monitor: ModelCheckpoint) -> None:
        self.checkpoint, self.missing_monitor = checkpoint, missing_monitor
        self.records: dict[str, object] = {}

    def files(self) -> list[str]:
        return sorted(p.name for p in Path(self.checkpoint.dirpath).glob("*.ckpt"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.records["before any save"] = _lightning.last_saved_step(self.checkpoint)
        if batch_idx == 1:  # global step 2
            _lightning.save_topk_and_last(self.checkpoint, trainer)
            self.records["saved"] = (self.files(), _lightning.last_saved_step(self.checkpoint))
            for path in Path(self.checkpoint.dirpath).glob("*.ckpt"):
                path.unlink()
            _lightning.save_topk_and_last(self.checkpoint, trainer)
            self.records["same step again"] = self.files()
            _lightning.save_topk_and_last(self.missing_monitor, trainer)
            self.records["missing monitor"] = sorted(Path(self.missing_monitor.dirpath).glob("*"))
        if batch_idx == 2:  # global step 3
            _lightning.save_last_checkpoint(self.checkpoint, trainer)
            last = torch.load(Path(self.checkpoint.dirpath) / "last.ckpt", weights_only=True)
            self.records["last"] = (
                self.files(),
                last["global_step"],
                _lightning.last_saved_step(self.checkpoint),
            )


@pytest.fixture(scope="module")
def checkpoint_probe(tmp_path_factory) -> CheckpointProbe:
    tmp_path = tmp_path_factory.mktemp("checkpoints")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=-1, every_n_epochs=0)
    missing = ModelCheckpoint(
        dirpath=tmp_path / "missing", monitor="val/absent", save_on_train_epoch_end=False
    )
    probe = CheckpointProbe(checkpoint, missing)
    tiny_fit(tmp_path, [probe, checkpoint, missing], max_steps=4, enable_checkpointing=True)
    return probe


def test_last_saved_step(checkpoint_probe):
    assert checkpoint_probe.records["before any save"] == 0
    assert checkpoint_probe.records["saved"][1] == 2
    assert checkpoint_probe.records["last"][2] == 3


def test_save_topk_and_last(checkpoint_probe):
    assert checkpoint_probe.records["saved"][0] == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert checkpoint_probe.records["same step again"] == []  # a step is saved once
    assert checkpoint_probe.records["missing monitor"] == []  # not while the monitored metric is missing


def test_save_last_checkpoint(checkpoint_probe):
    files, step, _ = checkpoint_probe.records["last"]
    assert files == ["last.ckpt"] and step == 3  # last.ckpt only, of the current step


class StopAndRecord(Callback):
    """Records the batch counters after each batch; calls ``stop_after_this_batch`` as batch ``stop_at``
    (0-based, over all epochs) starts and saves ``stopped.ckpt`` in ``on_exception``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at, self.exception, self.counters = stop_at, None, []

    def on_train_start(self, trainer, pl_module) -> None:
        self.at_start = _lightning.batches_done(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if _lightning.batches_done(trainer) == self.stop_at:
            _lightning.stop_after_this_batch(trainer)
            assert trainer.received_sigterm

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counters.append((_lightning.batches_done(trainer), _lightning.batches_done_this_epoch(trainer)))

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.exception, self.step = exception, trainer.global_step
        trainer.save_checkpoint(Path(trainer.default_root_dir) / "stopped.ckpt")


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory) -> tuple[StopAndRecord, StopAndRecord, Path]:
    """A fit of 2 batches an epoch stopped as batch 2 (the second epoch's first) starts, and its resumption to
    batch 4."""
    tmp_path = tmp_path_factory.mktemp("stopped")
    stopped, resumed = StopAndRecord(stop_at=2), StopAndRecord()
    with pytest.raises(SIGTERMException):
        tiny_fit(tmp_path, [stopped], max_steps=10, limit_train_batches=2)
    trainer = Trainer(
        accelerator="cpu", logger=False, limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, max_steps=4, limit_train_batches=2, callbacks=[resumed],
    )  # fmt: skip
    trainer.fit(BoringModel(), ckpt_path=tmp_path / "stopped.ckpt")
    return stopped, resumed, tmp_path / "stopped.ckpt"


def test_stop_after_this_batch(stopped_and_resumed):
    """Stops at the end of the batch it is called in, through ``on_exception`` with a ``SIGTERMException``."""
    stopped, _, _ = stopped_and_resumed
    assert isinstance(stopped.exception, SIGTERMException) and stopped.step == 3


def test_batches_done(stopped_and_resumed):
    stopped, resumed, _ = stopped_and_resumed
    assert [done for done, _ in stopped.counters] == [1, 2, 3]
    assert resumed.at_start == 3 and [done for done, _ in resumed.counters] == [4]  # restored on resume


def test_batches_done_this_epoch(stopped_and_resumed):
    stopped, resumed, _ = stopped_and_resumed
    assert [in_epoch for _, in_epoch in stopped.counters] == [1, 2, 1]
    assert [in_epoch for _, in_epoch in resumed.counters] == [2]


def test_checkpoint_batches_done(stopped_and_resumed):
    _, _, path = stopped_and_resumed
    assert _lightning.checkpoint_batches_done(torch.load(path, weights_only=True)) == 3


def test_end_restart_after_an_epochs_last_batch():
    """Ends a restart Lightning calls "mid-epoch" whose epoch is complete, not one that is really mid-epoch.
    (Whether Lightning still needs it: ``test_failures.py::test_a_signal_stop_resumes_exactly``.)"""
    from lightning.pytorch.loops.fit_loop import RestartStage

    for ready, restarted in [(1, False), (2, True)]:
        trainer = Trainer(accelerator="cpu", logger=False)
        fit_loop = trainer.fit_loop
        fit_loop._restart_stage = RestartStage.RESTARTED_MID_EPOCH
        fit_loop.epoch_progress.total.completed, fit_loop.epoch_progress.total.ready = 1, ready
        assert fit_loop.restarted_mid_epoch
        _lightning.end_restart_after_an_epochs_last_batch(trainer)
        assert fit_loop.restarted_mid_epoch is restarted


def test_cluster_environment():
    slurm = SLURMEnvironment(auto_requeue=True)
    trainer = Trainer(accelerator="cpu", devices=1, plugins=[slurm], logger=False)
    assert _lightning.cluster_environment(trainer) is slurm
    assert not hasattr(trainer.strategy, "cluster_environment")  # why the strategy's cannot be used
    plain = Trainer(accelerator="cpu", devices=1, logger=False)
    assert isinstance(_lightning.cluster_environment(plain), LightningEnvironment)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """SLURM's job variables and a stand-in ``scontrol`` that records its arguments in the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {bin_dir}/scontrol_args\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in [("JOB_ID", "4242"), ("JOB_NAME", "lit_gen-test"), ("NTASKS", "1"), ("NODELIST", "localhost"),
                       ("PROCID", "0"), ("LOCALID", "0"), ("NODEID", "0"), ("NTASKS_PER_NODE", "1")]:  # fmt: skip
        monkeypatch.setenv(f"SLURM_{key}", value)
    return bin_dir / "scontrol_args"


def test_slurm_save_and_requeue(tmp_path, fake_slurm):
    """Saves ``hpc_ckpt_1.ckpt`` of the current step into the run directory and requeues the job."""

    class RequeueAtBatch1(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 1:
                _lightning.slurm_save_and_requeue(trainer, signal.SIGUSR1)

    tiny_fit(tmp_path, [RequeueAtBatch1()], plugins=[SLURMEnvironment(auto_requeue=True)])
    assert fake_slurm.read_text() == "requeue 4242\n"
    assert torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 2


def test_lightning_keeps_a_requeue_handler_installed_before_fit(tmp_path, fake_slurm):
    """``SLURMRequeue`` installs its handler in ``setup``; Lightning's signal connector must leave it in place."""

    def ours(signum, frame) -> None:
        pass

    class Handler(Callback):
        def setup(self, trainer, pl_module, stage) -> None:
            self.previous = signal.signal(signal.SIGUSR1, ours)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.during_fit = signal.getsignal(signal.SIGUSR1)

        def teardown(self, trainer, pl_module, stage) -> None:
            signal.signal(signal.SIGUSR1, self.previous)

    handler = Handler()
    tiny_fit(tmp_path, [handler], plugins=[SLURMEnvironment(auto_requeue=True)])
    assert handler.during_fit is ours


# --- checkpoints -------------------------------------------------------------------------------------------------


class Tiny(LightningModule):
    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()


def cli_saved_hparams() -> dict:
    """The hyper-parameters a module instantiated by LightningCLI (as ``fit`` does) saves."""
    cli = LightningCLI(
        Tiny,
        subclass_mode_model=True,
        run=False,
        args=["--model=test_lightning_internals.Tiny", "--model.width=3"],
        trainer_defaults={"logger": False},
        save_config_callback=None,
        seed_everything_default=False,  # leaves the global RNGs and PL_GLOBAL_SEED alone
    )
    return dict(cli.model.hparams)


def test_cli_hparams_keys():
    assert set(cli_saved_hparams()) == {"width", *_lightning.CLI_HPARAMS_KEYS}


def test_saved_class_path():
    assert _lightning.saved_class_path(cli_saved_hparams()) == "test_lightning_internals.Tiny"
    assert _lightning.saved_class_path({"width": 3}) is None


def test_instantiate_saved():
    model = _lightning.instantiate_saved(LightningModule, cli_saved_hparams())
    assert type(model).__name__ == "Tiny" and model.hparams.width == 3


# --- loggers -----------------------------------------------------------------------------------------------------


def test_started_experiment_and_set_experiment(tmp_path):
    run = object()
    for logger in (CSVLogger(tmp_path), WandbLogger(save_dir=tmp_path, offline=True)):
        assert _lightning.started_experiment(logger) is None  # constructing does not start one
        _lightning.set_experiment(logger, run)
        assert _lightning.started_experiment(logger) is run and logger.experiment is run
        _lightning.set_experiment(logger, None)
        assert _lightning.started_experiment(logger) is None
    assert not (tmp_path / "wandb").exists()


def test_wandb_init_kwargs(tmp_path):
    logger = WandbLogger(name="n", project="p", save_dir=tmp_path, group="g")
    init = _lightning.wandb_init_kwargs(logger)
    assert init["name"] == "n" and init["project"] == "p" and init["group"] == "g"
    assert init["dir"] == os.fspath(tmp_path) and init["resume"] == "allow" and init["id"] is None
    init["name"] = "changed"
    assert _lightning.wandb_init_kwargs(logger)["name"] == "n"  # a copy


def test_wandb_attaching(tmp_path):
    class Run:  # what WandbLogger reads of a run when it is pickled for a spawned process
        id, name, _attach_id = "abc", "run", "attach-abc"

    logger = WandbLogger(save_dir=tmp_path, offline=True)
    assert not _lightning.wandb_attaching(logger)
    _lightning.set_experiment(logger, Run())
    assert _lightning.wandb_attaching(pickle.loads(pickle.dumps(logger)))


def test_logger_prefix(tmp_path):
    assert _lightning.logger_prefix(CSVLogger(tmp_path, prefix="a")) == "a"
    assert _lightning.logger_prefix(WandbLogger(save_dir=tmp_path, prefix="b")) == "b"
    assert _lightning.logger_prefix(CSVLogger(tmp_path)) == ""


def test_keeping_experiment_writer(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,x\n0,1\n")
    _lightning.KeepingExperimentWriter(str(tmp_path))
    assert metrics.read_text() == "step,x\n0,1\n"
    with pytest.warns(UserWarning, match="will be deleted"):
        ExperimentWriter(str(tmp_path))
    assert not metrics.exists()  # why the subclass is needed


# --- torch -------------------------------------------------------------------------------------------------------


def test_batch_norm():
    norms = [
        nn.BatchNorm1d(2),
        nn.BatchNorm2d(2),
        nn.BatchNorm3d(2),
        nn.SyncBatchNorm(2),
        nn.LazyBatchNorm2d(),
    ]
    assert all(isinstance(m, _lightning.BatchNorm) for m in norms)
    others = [nn.InstanceNorm2d(2, track_running_stats=True), nn.GroupNorm(1, 2), nn.LayerNorm(2)]
    assert not any(isinstance(m, _lightning.BatchNorm) for m in others)


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


# --- cli -------------------------------------------------------------------------------------------------------


class Width(LightningModule):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.width = width


class _Parsed(Exception):
    pass


def parsed_width(cli_class: type[LightningCLI], args: list[str]) -> int:
    """``model.width`` as ``cli_class`` has it after parsing (and after what LightningCLI does next)."""

    class StopBeforeInstantiating(cli_class):
        def before_instantiate_classes(self) -> None:
            raise _Parsed(self.config.fit.model.width)

    with pytest.raises(_Parsed) as parsed:
        StopBeforeInstantiating(Width, args=args, save_config_callback=None)
    return parsed.value.args[0]


def test_lightningcli_replaces_the_model_config_by_the_checkpoints_hparams_unless_told_not_to(tmp_path: Path):
    """``_parse_ckpt_path``: LightningCLI re-parses ``model`` from the hyper-parameters in ``--ckpt_path``
    between parsing and ``before_instantiate_classes``; ``ConfigOverCheckpointCLI`` keeps the command line's."""
    ckpt = tmp_path / "width7.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"width": 7}}, ckpt)
    args = ["fit", "--model.width", "3", "--ckpt_path", str(ckpt)]
    assert parsed_width(LightningCLI, args) == 7
    assert parsed_width(ConfigOverCheckpointCLI, args) == 3


def test_parse_args_can_leave_a_required_init_arg_unset_until_validated():
    """``_skip_validation``: a logger given without its required ``save_dir`` parses; ``validate`` then names
    it. The CLI fills in the run directory in between."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--logger", type=Logger)
    with pytest.raises(ArgumentError, match="save_dir"):
        parser.parse_args(["--logger=CSVLogger"])
    config = parse_without_validation(parser, ["--logger=CSVLogger"])
    assert config.logger.class_path == "lightning.pytorch.loggers.CSVLogger"
    assert config.logger.init_args.get("save_dir") is None
    with pytest.raises(TypeError, match="save_dir"):  # the CLI turns this into its one-line error
        parser.validate(config)
    config.logger.init_args.save_dir = "runs/x"
    parser.validate(config)
