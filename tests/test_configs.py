"""Every config in ``configs/`` parses (``--print_config``, no data needed) and trains one batch
(``fit --trainer.fast_dev_run=true``), taking its loggers from ``configs/shared/loggers.yaml``.

Configs whose data needs a download run on small fixtures (see ``tests/helpers/datasets.py``): MNIST on 1,000
real test digits shipped in ``tests/data/mnist``, CIFAR-10 on a tiny fake in its pickle format, image folders on
20 PNGs.
A config added later is picked up automatically with no overrides; if it needs data, its fit fails here until
its author adds an entry to ``CONFIG_OVERRIDES``.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from helpers.paths import CONFIGS, SHAKESPEARE_EXCERPT
from helpers.runs import run_dirs

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
#: the logger block every config refers to (``trainer.logger: shared/loggers.yaml``)
SHARED_LOGGERS = "shared/loggers.yaml"

#: config file name pattern (fnmatch) -> function of test fixtures (by parameter name) returning extra CLI args
#: for the fast_dev_run test. The first matching pattern applies; a config matching none gets no overrides.
CONFIG_OVERRIDES: dict[str, Callable[..., list[str]]] = {
    "*fashion*mnist*.yaml": lambda: pytest.fail(
        "no offline Fashion-MNIST fixture: add one to tests/helpers/datasets.py"
    ),
    "*mnist*.yaml": lambda mnist_dir: [
        *("--data.init_args.data_dir", mnist_dir, "--data.init_args.download", "false"),
        *("--data.init_args.num_workers", "0"),
    ],
    # torchvision checks CIFAR-10's files against the real archive's MD5: cifar10_skip_md5 checks existence only.
    # The fake has 40 training images, fewer than the configs' batch sizes (drop_last would leave no batch).
    "*cifar10*.yaml": lambda cifar10_dir, cifar10_skip_md5: [
        *("--data.init_args.data_dir", cifar10_dir, "--data.init_args.download", "false"),
        *("--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8"),
    ],
    # 20 PNGs; two loader workers as in the config, so the worker path is exercised once
    "imagefolder*.yaml": lambda image_folder: [
        "--data.init_args.root",
        image_folder,
        "--data.init_args.batch_size",
        "8",
    ],
    # the Tiny Shakespeare excerpt in tests/data (all 65 characters); batch 2 keeps the 10.7M-parameter GPT's one step short on a CPU
    "gpt_shakespeare*.yaml": lambda: [
        *("--data.init_args.path", SHAKESPEARE_EXCERPT),
        *("--data.init_args.batch_size", "2"),
    ],
}


def overrides_for(config: Path, request: pytest.FixtureRequest) -> list[str]:
    for pattern, make_args in CONFIG_OVERRIDES.items():
        if fnmatch.fnmatch(config.name, pattern):
            fixtures = {
                name: request.getfixturevalue(name) for name in inspect.signature(make_args).parameters
            }
            return [str(arg) for arg in make_args(**fixtures)]
    return []


def test_configs_are_found():
    assert len(CONFIG_FILES) >= 8
    names = {p.name for p in CONFIG_FILES}
    for expected in (
        "gan.yaml",
        "dcgan_mnist.yaml",
        "dcgan_cifar10.yaml",
        "wgan_gp_cifar10.yaml",
        "sngan_cifar10.yaml",
        "toy_ring.yaml",
        "toy_grid.yaml",
        "imagefolder.yaml",
    ):
        assert expected in names


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.name)
def test_config_sets_seed_and_says_what_it_is(config):
    text = config.read_text()
    raw = yaml.safe_load(text)
    assert isinstance(raw.get("seed_everything"), int), "every config sets seed_everything explicitly"
    assert text.lstrip().startswith("#"), "a config starts with a comment saying what it reproduces"


def test_every_config_refers_to_the_shared_loggers_and_keeps_its_own_tags():
    shared = yaml.safe_load((CONFIGS / SHARED_LOGGERS).read_text())
    assert [x["class_path"] for x in shared] == [
        "lit_gen.loggers.OfflineFirstWandbLogger",
        "lit_gen.loggers.ResumableCSVLogger",
    ]
    for config in CONFIG_FILES:
        text = config.read_text()
        raw = yaml.safe_load(text)
        assert raw["trainer"]["logger"] == SHARED_LOGGERS, config.name
        assert "Logger" not in text, f"{config.name}: a copy of a logger block"
        tags = raw["run"]["tags"]
        assert tags and all(isinstance(tag, str) for tag in tags), config.name


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.name)
def test_print_config(cli, config):
    code, out, err = cli("fit", "--config", config, "--print_config")
    assert code == 0, err
    printed = yaml.safe_load(out)
    raw = yaml.safe_load(config.read_text())
    assert printed["seed_everything"] == raw["seed_everything"]
    assert printed["model"]["class_path"] == raw["model"]["class_path"]
    assert printed["data"]["class_path"] == raw["data"]["class_path"]
    # the shared logger block, read relative to the config's folder (the test runs in a temporary folder)
    shared = yaml.safe_load((CONFIGS / SHARED_LOGGERS).read_text())
    assert [x["class_path"] for x in printed["trainer"]["logger"]] == [x["class_path"] for x in shared]
    assert not Path("runs").exists(), "--print_config must not create a run directory"


# a DataModule too small for the batch size would make fast_dev_run train nothing and still exit 0
@pytest.mark.filterwarnings("error:Total length of .* across ranks is zero")
@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.name)
def test_fast_dev_run(cli, config, request):
    args = overrides_for(config, request)
    code, out, err = cli("fit", "--config", config, "--trainer.fast_dev_run", "true", *args)
    assert code == 0, (
        f"{config.name} failed under fast_dev_run with overrides {args}; if it needs data, add an entry to "
        f"CONFIG_OVERRIDES in tests/test_configs.py.\n{err[-3000:]}"
    )
    assert "Traceback" not in err and "lit_gen: error" not in err


def gan_schedule(config: str) -> tuple[dict, int, int]:
    """The model's init_args, and the generator / discriminator steps the config's max_steps make."""
    raw = yaml.safe_load((CONFIGS / config).read_text())
    model = raw["model"]["init_args"]
    n_critic = model["n_critic"]
    batches = raw["trainer"]["max_steps"] * n_critic // (n_critic + 1)
    return model, batches // n_critic, batches


def test_sngan_decays_both_learning_rates_linearly_to_zero_over_training():
    """mimicry's SN-GAN (lr_decay: linear, after SN-GAN's Chainer code)."""
    model, g_steps, d_steps = gan_schedule("sngan_cifar10.yaml")
    for player, steps in (("generator", g_steps), ("discriminator", d_steps)):
        scheduler = model.get(f"{player}_lr_scheduler")
        assert scheduler is not None, player
        assert scheduler["class_path"] == "torch.optim.lr_scheduler.LinearLR"
        assert scheduler["init_args"] == {"start_factor": 1.0, "end_factor": 0.0, "total_iters": steps}


def test_wgan_gp_follows_algorithm_1_of_the_paper():
    """Gulrajani et al. 2017, Algorithm 1: lambda 10, n_critic 5, Adam(1e-4, (0, 0.9)), batch 64, no decay."""
    model, _, _ = gan_schedule("wgan_gp_cifar10.yaml")
    raw = yaml.safe_load((CONFIGS / "wgan_gp_cifar10.yaml").read_text())
    assert "Algorithm 1" in (CONFIGS / "wgan_gp_cifar10.yaml").read_text().split("seed_everything")[0]
    assert model["penalty"]["init_args"] == {"weight": 10.0} and model["n_critic"] == 5
    for player in ("generator", "discriminator"):
        assert model[f"{player}_optimizer"]["init_args"] == {"lr": 0.0001, "betas": [0.0, 0.9]}, player
        assert model.get(f"{player}_lr_scheduler") is None, player
    assert raw["data"]["init_args"]["batch_size"] == 64


def test_a_config_runs_from_another_folder_and_its_run_config_stands_alone(cli, tmp_path):
    """From a folder that is not the repository (the test's temporary folder) the shared loggers are found next
    to the config; the run's config.yaml holds them written out, with the config's tags, and resumes the run
    wherever the configs are."""
    config = CONFIGS / "toy_grid.yaml"
    tags = yaml.safe_load(config.read_text())["run"]["tags"]
    code, _, err = cli(
        "fit", "--config", config, "--trainer.max_steps", "4", "--trainer.enable_progress_bar=false"
    )
    assert code == 0, err
    (run_dir,) = run_dirs()
    saved_text = (run_dir / "config.yaml").read_text()
    assert SHARED_LOGGERS not in saved_text
    wandb_logger, csv_logger = yaml.safe_load(saved_text)["trainer"]["logger"]
    assert wandb_logger["class_path"] == "lit_gen.loggers.OfflineFirstWandbLogger"
    assert wandb_logger["init_args"]["tags"] == tags
    assert csv_logger["class_path"] == "lit_gen.loggers.ResumableCSVLogger"

    moved = tmp_path / "elsewhere" / "config.yaml"
    moved.parent.mkdir()
    moved.write_text(saved_text)
    code, _, err = cli(
        *("fit", "--config", moved, "--ckpt_path", "last", "--trainer.max_steps", "8"),
        "--trainer.enable_progress_bar=false",
    )
    assert code == 0, err
    assert run_dirs() == [run_dir]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 8
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["logger"][0] == wandb_logger
