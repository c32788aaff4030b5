"""What ``fit`` does around training: the CPU threads it chooses, one run at a time per run directory, a failed
start that leaves an explicit run directory as it was, the console (no irrelevant warnings, a summary at the
end) and the top-level help."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers.configs import TINY_IMAGE_GAN, VAE_CONFIG, write_config
from helpers.runs import run_dirs

from lit_gen.cli import COMMAND_HELP, EXTRA_COMMANDS, available_cpus, default_threads
from lit_gen.run_dir import RunDirLock

CFG = "tiny.yaml"

#: the tiny GAN logging to W&B (offline) and CSV, as the shipped configs do
WITH_LOGGERS = TINY_IMAGE_GAN.replace(
    "  log_every_n_steps: 1\n",
    """  log_every_n_steps: 1
  logger:
    - class_path: lit_gen.loggers.OfflineFirstWandbLogger
      init_args: {project: lit_gen_tests}
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {name: csv, version: ""}
""",
)

#: a data set that is missing: the start fails after the run directory and the loggers are set up
MISSING_DATA = (
    *("--data", "lit_gen.data.MNIST", "--data.init_args.data_dir", "no_mnist_here"),
    *("--data.init_args.download", "false", "--data.init_args.num_workers", "0"),
)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("lit_gen: error:")]


def snapshot(root: Path) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# --- threads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, env, cpus, expected",
    [
        (["--threads", "3"], {"OMP_NUM_THREADS": "1"}, 8, 3),
        ([], {"OMP_NUM_THREADS": "2"}, 8, 2),
        ([], {"SLURM_CPUS_PER_TASK": "3"}, 8, 3),
        ([], {}, 8, 4),
        ([], {}, 2, 1),
        ([], {}, 1, 1),
    ],
    ids=["option", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "half of 8 CPUs", "half of 2 CPUs", "1 CPU"],
)
def test_fit_uses_the_threads_of_the_option_else_of_the_environment(
    cli, monkeypatch, restore_threads, args, env, cpus, expected
):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("lit_gen.cli.available_cpus", lambda: cpus)
    torch.set_num_threads(5)  # neither the default nor any expected value
    write_config(Path(CFG), TINY_IMAGE_GAN)
    code, _, err = cli("fit", "--config", CFG, "--trainer.max_steps", "2", *args)
    assert code == 0, err
    assert torch.get_num_threads() == expected
    assert default_threads() == (expected if not args else 3)  # an explicit number is passed on to children


def test_threads_must_be_positive(cli, restore_threads):
    write_config(Path(CFG), TINY_IMAGE_GAN)
    code, _, err = cli("fit", "--config", CFG, "--threads", "0")
    assert code == 2 and len(error_lines(err)) == 1 and "threads" in error_lines(err)[0]
    assert not run_dirs()


@pytest.mark.parametrize(
    "cpu_max, expected", [("max 100000\n", 6), ("200000 100000\n", 2), ("50000 100000", 1)]
)
def test_available_cpus_follow_a_containers_cpu_quota(tmp_path, monkeypatch, cpu_max, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)))
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert available_cpus(tmp_path / "cpu.max") == expected
    assert available_cpus(tmp_path / "absent") == 6


# --- one run per directory ----------------------------------------------------------------------------------


def test_a_run_directory_holds_one_run_at_a_time(cli):
    write_config(Path(CFG), TINY_IMAGE_GAN)
    run_dir = Path("run")
    run_dir.mkdir()
    other = RunDirLock(run_dir)
    other.acquire()  # another process's run (flock conflicts between two open files of one process too)
    before = snapshot(run_dir)
    code, _, err = cli("fit", "--config", CFG, "--run.dir", run_dir, "--trainer.max_steps", "2")
    other.release()
    assert code == 2, err
    (line,) = error_lines(err)
    assert "run.dir: 'run' is in use by another lit_gen run" in line
    del before[run_dir / RunDirLock.NAME]
    assert snapshot(run_dir) == before
    # once the other run has ended, the directory is free; a run leaves no lock file behind
    code, _, err = cli("fit", "--config", CFG, "--run.dir", run_dir, "--trainer.max_steps", "2")
    assert code == 0, err
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / RunDirLock.NAME).exists()


# --- a failed start -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["new directory", "existing directory"])
def test_a_failed_start_leaves_an_explicit_run_directory_as_it_was(cli, existing):
    write_config(Path(CFG), WITH_LOGGERS)
    run_dir = Path("mine") / "run"
    if existing:
        (run_dir / "notes").mkdir(parents=True)
        (run_dir / "notes" / "todo.txt").write_text("keep me")
        (run_dir / "config.yaml").write_text("# the user's own\n")
    before = snapshot(Path("."))
    code, _, err = cli("fit", "--config", CFG, "--run.dir", run_dir, *MISSING_DATA)
    assert code == 2 and "no_mnist_here" in error_lines(err)[0], err
    assert snapshot(Path(".")) == before


# --- the console --------------------------------------------------------------------------------------------


def test_fit_prints_no_irrelevant_warnings_and_ends_with_a_summary(cli_subprocess, tmp_path):
    write_config(
        tmp_path / CFG, WITH_LOGGERS.replace("enable_progress_bar: false", "enable_progress_bar: true")
    )
    result = cli_subprocess("fit", "--config", CFG, "--trainer.max_steps", "4")
    assert result.returncode == 0, result.stderr
    err = result.stderr
    for noise in (
        "Tip:",
        "GPU available",
        "TPU available",
        "LeafSpec",
        "validation_step",
        "logging interval",
    ):
        assert noise not in err, noise
    (run_dir,) = run_dirs(tmp_path / "runs")
    run_dir = run_dir.relative_to(tmp_path)
    summary = err[err.index("lit_gen: fit ended at step 4") :].splitlines()
    assert summary[1].split() == ["run", "directory", str(run_dir)]
    assert any(line.split()[:3] == ["last", "metrics", "train/D_fake"] for line in summary)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"  checkpoint    {last}" in summary
    assert f"  sample        python -m lit_gen sample --ckpt_path {last}" in summary
    assert (
        f"  resume        python -m lit_gen fit --config {run_dir / 'config.yaml'} --ckpt_path last"
        in summary
    )
    # the overall progress and ETA in the bar (on stdout, as Lightning draws it)
    assert "Epoch 0 [step 4/4, ETA 0:00]" in result.stdout


# --- help ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_every_subcommand(cli, flag):
    code, out, _ = cli(flag)
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "predict", *EXTRA_COMMANDS]
    assert list(COMMAND_HELP) == listed


def test_evaluate_help_is_short(cli):
    code, out, _ = cli("evaluate", "--help")
    assert code == 0
    assert "--extractor" in out and "torch.nn.Linear" not in out
    assert len(out.splitlines()) < 150


def test_a_run_that_failed_after_saving_a_checkpoint_keeps_what_it_wrote(cli):
    write_config(Path(CFG), TINY_IMAGE_GAN)
    run_dir = Path("run")
    code, _, err = cli("fit", "--config", CFG, "--run.dir", run_dir, "--trainer.max_steps", "2")
    assert code == 0, err
    before = snapshot(run_dir)
    with pytest.raises(RuntimeError, match="failed at the end of training"):
        cli(
            "fit", "--config", run_dir / "config.yaml", "--ckpt_path", "last", "--trainer.max_steps", "4",
            "--trainer.callbacks+=helpers.callbacks.FailAtTrainEnd",
        )  # fmt: skip
    after = snapshot(run_dir)
    assert after[run_dir / "checkpoints" / "last.ckpt"] != before[run_dir / "checkpoints" / "last.ckpt"]
    assert after[run_dir / "config.yaml"] != before[run_dir / "config.yaml"]  # the config it trained with
    assert b"max_steps: 4" in after[run_dir / "config.yaml"]
    assert set(after) > set(before)  # e.g. the samples of its batches


def test_resuming_in_place_does_not_warn_that_the_checkpoint_directory_is_not_empty(cli):
    write_config(Path(CFG), TINY_IMAGE_GAN)
    code, _, err = cli("fit", "--config", CFG, "--run.dir", "run", "--trainer.max_steps", "2")
    assert code == 0, err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = cli(
            "fit", "--config", "run/config.yaml", "--ckpt_path", "last", "--trainer.max_steps", "4"
        )
    assert code == 0, err
    assert not [
        w for w in caught if "exists and is not empty" in str(w.message) and "Checkpoint" in str(w.message)
    ]


def test_the_summary_shows_the_metrics_callbacks_evaluate():
    """SampleQuality and ModeMetrics put val/* into ``callback_metrics`` only; the summary must show them."""
    from lightning.pytorch import Trainer

    from lit_gen.cli import fit_summary

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.callback_metrics["val/fd_random"] = torch.tensor(0.0462)
    summary = fit_summary(trainer, None, 3.0)
    assert "val/fd_random 0.0462" in summary, summary


# --- a run's config written before classes moved ------------------------------------------------------------


def vae_with_moved_classes() -> str:
    """test_resume's tiny VAE with an LR scheduler: its likelihood and scheduler are classes that moved
    (``lit_gen.checkpoints.MOVED_CLASS_PATHS``)."""
    config = yaml.safe_load(VAE_CONFIG)
    config["trainer"].update(max_steps=2, logger=False)
    config["model"]["init_args"]["lr_scheduler"] = {"class_path": "lit_gen.optim.BurdaLR"}
    return yaml.safe_dump(config)


MOVED = {
    "lit_gen.likelihoods.Bernoulli": "lit_gen.models.vae.Bernoulli",
    "lit_gen.optim.BurdaLR": "lit_gen.models.vae.BurdaLR",
}


def _with_old_class_paths(value):
    if isinstance(value, str):
        return MOVED.get(value, value)
    if isinstance(value, dict):
        return {k: _with_old_class_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_old_class_paths(v) for v in value]
    return value


def test_a_run_whose_config_names_classes_that_moved_still_resumes(cli):
    write_config(Path("vae.yaml"), vae_with_moved_classes())
    code, _, err = cli("fit", "--config", "vae.yaml", "--run.dir", "run")
    assert code == 0, err
    # the run as an older lit_gen wrote it: config.yaml and the checkpoint's hyper-parameters name old paths
    config = Path("run/config.yaml")
    text = config.read_text()
    for new, old in MOVED.items():
        text = text.replace(new, old)
    config.write_text(text)
    last = Path("run/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"] = _with_old_class_paths(checkpoint["hyper_parameters"])
    assert "lit_gen.models.vae.BurdaLR" in str(checkpoint["hyper_parameters"])
    torch.save(checkpoint, last)

    code, _, err = cli("fit", "--config", config, "--ckpt_path", "last", "--trainer.max_steps", "4")
    assert code == 0, err
    notices = [line for line in err.splitlines() if "moved" in line]
    assert notices == [
        "lit_gen: config: read class paths that moved as their new ones (lit_gen.models.vae.Bernoulli -> "
        "lit_gen.likelihoods.Bernoulli, lit_gen.models.vae.BurdaLR -> lit_gen.optim.BurdaLR)"
    ], err
    assert torch.load(last, weights_only=True)["global_step"] == 4
    text = config.read_text()  # the resumed run's config names the new paths
    assert all(old not in text and new in text for new, old in MOVED.items())
