"""Bad input: a non-zero exit, exactly one ``lit_gen: error:`` line on stderr naming the culprit (key, path or
value), no traceback, and nothing left on disk (no run directory, no output folder)."""

from __future__ import annotations

import errno
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.configs import TINY_IMAGE_GAN, write_config
from helpers.paths import CONFIGS
from helpers.runs import run_dirs

CFG = "tiny.yaml"


def _truncated_checkpoint() -> None:
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, "whole.ckpt")
    data = Path("whole.ckpt").read_bytes()
    Path("truncated.ckpt").write_bytes(data[: len(data) // 2])
    Path("whole.ckpt").unlink()


def _foreign_checkpoint() -> None:
    torch.save({"weights": torch.zeros(3)}, "foreign.ckpt")


def _bad_yaml() -> None:
    Path("broken.yaml").write_text("trainer:\n  max_steps: [1\n")


def _empty_image_folder() -> None:
    Path("no_images/sub").mkdir(parents=True)
    Path("no_images/sub/readme.txt").write_text("no images here")


def _config_without_its_shared_folder() -> None:
    """A shipped config copied on its own: its ``trainer.logger: shared/loggers.yaml`` names no file."""
    shutil.copy(CONFIGS / "toy_grid.yaml", "toy_grid.yaml")


def _nothing() -> None:
    pass


def _broken_images() -> None:
    """An image folder whose PNGs are cut short after their header (PIL opens them, decoding fails)."""
    from helpers.datasets import write_image_folder

    write_image_folder(Path("images"), num=8)
    for i, path in enumerate(sorted(Path("images").rglob("*.png"))):
        path.with_name(f"broken_{i}.png").write_bytes(path.read_bytes()[:60])
        path.unlink()


#: the shipped pixel GPT, without its W&B logger, with a negative learning rate
GPT_NEGATIVE_LR = [
    *("fit", "--config", CONFIGS / "gpt_pixels_digits.yaml", "--trainer.logger", "false"),
    *("--model.init_args.optimizer.init_args.lr", "-0.1"),
]


def _run_dir_without_checkpoints() -> None:
    Path("old_run/checkpoints").mkdir(parents=True)
    Path("old_run/notes.txt").write_text("the user's")


#: id -> (files to create first, CLI arguments, the text the error line must contain)
CASES: dict[str, tuple[Callable[[], None], list[str], str]] = {
    "unknown key": (_nothing, ["fit", "--config", CFG, "--model.init_args.n_critics", "2"], "n_critics"),
    "wrong type": (_nothing, ["fit", "--config", CFG, "--trainer.max_steps", "abc"], "trainer.max_steps"),
    "bad choice": (_nothing, ["fit", "--config", CFG, "--trainer.precision", "17"], "trainer.precision"),
    "missing config file": (_nothing, ["fit", "--config", "missing.yaml"], "missing.yaml"),
    "config file not YAML": (_bad_yaml, ["fit", "--config", "broken.yaml"], "broken.yaml"),
    "config naming a missing sub-config file": (
        _config_without_its_shared_folder,
        ["fit", "--config", "toy_grid.yaml"],
        "trainer.logger: no file 'shared/loggers.yaml' (a relative path in a config file is relative to",
    ),
    "unknown class_path": (
        _nothing,
        ["fit", "--config", CFG, "--model", "lit_gen.models.Nope"],
        "lit_gen.models.Nope",
    ),
    "class of the wrong kind": (
        _nothing,
        ["fit", "--config", CFG, "--model.init_args.loss", "torch.nn.Linear"],
        "loss",
    ),
    "negative n_critic": (
        _nothing,
        ["fit", "--config", CFG, "--model.init_args.n_critic", "-1"],
        "model.n_critic",
    ),
    "ema_decay out of range": (
        _nothing,
        ["fit", "--config", CFG, "--model.init_args.ema_decay", "1.5"],
        "model.ema_decay",
    ),
    "zero batch size": (
        _nothing,
        ["fit", "--config", CFG, "--data.init_args.batch_size", "0"],
        "data.batch_size",
    ),
    "bad DCGAN image_size": (
        _nothing,
        ["fit", "--config", CFG, "--model.init_args.generator.init_args.image_size", "30"],
        "image_size",
    ),
    "data and model sizes differ": (
        _nothing,
        ["fit", "--config", CFG, "--data.init_args.image_size", "16"],
        "model.generator",
    ),
    "missing dataset with download false": (
        _nothing,
        [
            *("fit", "--config", CFG, "--data", "lit_gen.data.MNIST"),
            *("--data.init_args.data_dir", "no_mnist_here", "--data.init_args.download", "false"),
            *("--data.init_args.num_workers", "0"),
        ],
        "no_mnist_here",
    ),
    "image folder missing": (
        _nothing,
        [
            "fit",
            "--config",
            CFG,
            "--data",
            "lit_gen.data.ImageFolder",
            "--data.init_args.root",
            "no_such_folder",
        ],
        "no_such_folder",
    ),
    "image folder without images": (
        _empty_image_folder,
        [
            *("fit", "--config", CFG, "--data", "lit_gen.data.ImageFolder"),
            *("--data.init_args.root", "no_images", "--data.init_args.num_workers", "0"),
        ],
        "no_images",
    ),
    "image folder with a corrupt PNG, read by a worker": (
        _broken_images,
        [
            *(
                "fit",
                "--config",
                CFG,
                "--data",
                "lit_gen.data.ImageFolder",
                "--data.init_args.root",
                "images",
            ),
            *("--data.init_args.image_size", "8", "--data.init_args.channels", "1"),
            *("--data.init_args.batch_size", "4", "--data.init_args.num_workers", "1"),
        ],
        "images/broken_",
    ),
    "negative GAN learning rate": (
        _nothing,
        [
            *("fit", "--config", CFG, "--model.init_args.generator_optimizer", "torch.optim.Adam"),
            *("--model.init_args.generator_optimizer.init_args.lr", "-0.1"),
        ],
        "model.generator_optimizer: Invalid learning rate: -0.1",
    ),
    "negative GPT learning rate": (_nothing, GPT_NEGATIVE_LR, "model.optimizer: Invalid learning rate: -0.1"),
    "evaluate: Inception weights missing": (
        _nothing,
        [
            *("evaluate", "--images", "nowhere", "--extractor", "lit_gen.metrics.InceptionV3Features"),
            *("--extractor.init_args.weights_path", "missing.pth"),
        ],
        "--extractor lit_gen.metrics.RandomConvFeatures",
    ),
    "fit from a missing checkpoint": (
        _nothing,
        ["fit", "--config", CFG, "--ckpt_path", "gone/last.ckpt"],
        "gone/last.ckpt",
    ),
    "fit for zero steps": (
        _nothing,
        ["fit", "--config", CFG, "--trainer.max_steps", "0"],
        "trainer.max_steps",
    ),
    "resume without a run directory": (
        _nothing,
        ["fit", "--config", CFG, "--ckpt_path", "last"],
        "--run.dir",
    ),
    "resume a run directory without a checkpoint": (
        _run_dir_without_checkpoints,
        ["fit", "--config", CFG, "--run.dir", "old_run", "--ckpt_path", "last"],
        "old_run/checkpoints",
    ),
    "validate a model without validation_step": (_nothing, ["validate", "--config", CFG], "validation_step"),
    "unknown fit option": (_nothing, ["fit", "--config", CFG, "--max_stepz", "3"], "--max_stepz"),
    "unknown subcommand": (_nothing, ["train", "--config", CFG], "train"),
    "sample: missing checkpoint": (
        _nothing,
        ["sample", "--ckpt_path", "nowhere/last.ckpt", "--out_dir", "out"],
        "nowhere/last.ckpt",
    ),
    "sample: truncated checkpoint": (
        _truncated_checkpoint,
        ["sample", "--ckpt_path", "truncated.ckpt", "--out_dir", "out"],
        "truncated.ckpt",
    ),
    "sample: not a Lightning checkpoint": (
        _foreign_checkpoint,
        ["sample", "--ckpt_path", "foreign.ckpt", "--out_dir", "out"],
        "foreign.ckpt",
    ),
    "sample: zero samples": (
        _foreign_checkpoint,
        ["sample", "--ckpt_path", "foreign.ckpt", "--num_samples", "0", "--out_dir", "out"],
        "num_samples",
    ),
    "sample: unknown option": (
        _foreign_checkpoint,
        ["sample", "--ckpt_path", "foreign.ckpt", "--num_steps", "3"],
        "--num_steps",
    ),
    "sample: wrong type": (
        _foreign_checkpoint,
        ["sample", "--ckpt_path", "foreign.ckpt", "--seed", "one"],
        "seed",
    ),
}


def tree(root: Path = Path(".")) -> set[Path]:
    return set(root.rglob("*"))


def check_one_line_error(code: int, err: str, culprit: str) -> str:
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("lit_gen: error:")]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}:\n{err}"
    assert culprit in errors[0], f"{culprit!r} not named in: {errors[0]}"
    assert err.strip().splitlines()[-1] == errors[0], "the error line must be the last line on stderr"
    return errors[0]


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_naming_the_culprit_and_leaves_nothing(cli, case):
    prepare, args, culprit = CASES[case]
    write_config(Path(CFG), TINY_IMAGE_GAN)
    prepare()
    before = tree()
    code, out, err = cli(*args)
    check_one_line_error(code, err, culprit)
    left = sorted(str(p) for p in tree() - before)
    assert not left, f"left behind: {left}"


def test_at_least_twelve_cases():
    assert len(CASES) >= 12


def test_bad_input_in_a_fresh_process(cli_subprocess, tmp_path):
    """The real ``python -m lit_gen``: the error comes after the run directory was claimed (data setup), so the
    directory must be removed, and nothing but the one line may reach stderr after it."""
    write_config(tmp_path / CFG, TINY_IMAGE_GAN)
    result = cli_subprocess(
        *("fit", "--config", CFG, "--data", "lit_gen.data.MNIST"),
        *("--data.init_args.data_dir", "no_mnist_here", "--data.init_args.download", "false"),
    )
    line = check_one_line_error(result.returncode, result.stderr, "no_mnist_here")
    assert "download" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [CFG]
    # the run directory named at the start is said to be gone (a W&B sync hint may have pointed into it)
    assert "lit_gen: removed the run directory" in result.stderr


def test_unknown_subcommand_lists_every_subcommand(cli):
    code, _, err = cli("train")
    line = check_one_line_error(code, err, "'train'")
    for command in ("fit", "validate", "test", "predict", "sample", "evaluate", "submit", "compare"):
        assert command in line


# --- places that cannot be written, no network ----------------------------------------------------------------


def _read_only(monkeypatch, folder: Path) -> None:
    """Makes ``folder`` read-only: chmod for an ordinary user, and creating anything inside it fails with EACCES
    also for root (who ignores the mode bits)."""
    folder.mkdir()
    folder.chmod(0o555)
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).absolute().is_relative_to(folder.absolute()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.mark.parametrize("place", ["read-only", "a file in the way"])
def test_a_run_root_that_cannot_be_written_is_one_line(cli, monkeypatch, place):
    write_config(Path(CFG), TINY_IMAGE_GAN)
    if place == "read-only":
        _read_only(monkeypatch, Path("locked"))
        root = "locked"
    else:
        Path("file").write_text("not a folder")
        root = "file/runs"
    before = tree()
    line = check_one_line_error(*cli("fit", "--config", CFG, "--run.root", root)[::2], "run.root")
    assert root in line
    assert tree() == before


@pytest.mark.parametrize("place", ["read-only", "a file in the way"])
def test_a_sample_out_dir_that_cannot_be_written_is_one_line(cli, monkeypatch, place):
    write_config(Path(CFG), TINY_IMAGE_GAN)
    assert cli("fit", "--config", CFG)[0] == 0
    (run,) = run_dirs()
    if place == "read-only":
        _read_only(monkeypatch, Path("locked"))
        out_dir = "locked/samples"
    else:
        Path("file").write_text("not a folder")
        out_dir = "file/samples"
    before = tree()
    code, _, err = cli("sample", "--ckpt_path", run / "checkpoints" / "last.ckpt", "--out_dir", out_dir)
    assert "out_dir" in check_one_line_error(code, err, out_dir)
    assert tree() == before


#: the shipped configs that download their dataset (CIFAR-10 x5, and one MNIST for its raw/ folder)
DOWNLOADING = [*sorted(CONFIGS.glob("*cifar10*.yaml")), CONFIGS / "dcgan_mnist.yaml"]


@pytest.mark.parametrize("config", DOWNLOADING, ids=lambda p: p.stem)
def test_shipped_configs_without_network_are_one_line_and_leave_no_data_folder(cli, monkeypatch, config):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    code, _, err = cli("fit", "--config", config)
    line = check_one_line_error(code, err, "data.data_dir: could not download")
    assert (
        "'data'" in line and "Temporary failure in name resolution" in line and "data.download=false" in line
    )
    assert sorted(Path(".").iterdir()) == []  # no empty ./data (or data/MNIST/raw), no run directory
