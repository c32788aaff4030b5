"""What ``fit`` leaves in a run directory, per-run directories that never collide, and the files ``sample``
writes from a checkpoint (image GAN: samples.pt + grid.png + images/; toy GAN: samples.pt + scatter.png)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers.configs import TINY_IMAGE_GAN, TINY_TOY_GAN, write_config
from helpers.runners import fit_in
from helpers.runs import run_dirs
from PIL import Image


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return fit_in(tmp_path_factory.mktemp("image_run"), "tiny", TINY_IMAGE_GAN)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    return fit_in(tmp_path_factory.mktemp("toy_run"), "toy", TINY_TOY_GAN)


# --- the run directory ---------------------------------------------------------------------------------------


def test_fit_leaves_config_checkpoint_and_sample_grids(image_run):
    assert image_run.parent.name == "tiny"  # runs/<config stem>/<stamp>
    config = yaml.safe_load((image_run / "config.yaml").read_text())
    fit_cwd = image_run.parents[2]
    assert (fit_cwd / config["run"]["dir"]).resolve() == image_run.resolve()
    assert config["seed_everything"] == 0
    assert config["model"]["init_args"]["generator"]["init_args"]["image_size"] == 8
    checkpoint = torch.load(image_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    grids = sorted(p.name for p in (image_run / "samples").glob("*.png"))
    assert grids == ["batch_0000001.png", "batch_0000002.png"]
    with Image.open(image_run / "samples" / grids[-1]) as grid:
        assert grid.size == (4 * (8 + 2) + 2, 4 * (8 + 2) + 2)  # 16 samples, 4 per row, 2 px padding
    rows = list(csv.DictReader((image_run / "csv" / "metrics.csv").open()))
    assert any(row.get("train/d_loss") for row in rows) and any(row.get("train/g_loss") for row in rows)


def test_toy_fit_logs_the_mode_metrics(toy_run):
    rows = list(csv.DictReader((toy_run / "csv" / "metrics.csv").open()))
    modes = [float(row["val/modes"]) for row in rows if row.get("val/modes")]
    assert modes and all(0 <= m <= 8 for m in modes)
    assert sorted(p.name for p in (toy_run / "samples").glob("*.png")) == [
        "batch_0000001.png",
        "batch_0000002.png",
    ]


def test_two_fits_get_two_run_dirs_and_a_rerun_reuses_its_own(cli):
    write_config(Path("tiny.yaml"), TINY_IMAGE_GAN.replace("max_steps: 4", "max_steps: 2"))
    for _ in range(2):
        code, _, err = cli("fit", "--config", "tiny.yaml")
        assert code == 0, err
    first, second = run_dirs()
    assert first != second and first.parent == second.parent
    for run in (first, second):
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    # re-running with the run's own config.yaml trains in the same directory (no abort on its config.yaml) and
    # overwrites its last.ckpt (no stale last.ckpt beside a last-v1.ckpt)
    code, _, err = cli("fit", "--config", first / "config.yaml", "--trainer.max_steps", "4")
    assert code == 0, err
    assert run_dirs() == [first, second]
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert yaml.safe_load((first / "config.yaml").read_text())["trainer"]["max_steps"] == 4


def test_a_saved_config_trained_into_another_run_dir_writes_only_there(cli):
    write_config(Path("tiny.yaml"), TINY_IMAGE_GAN.replace("max_steps: 4", "max_steps: 2"))
    code, _, err = cli("fit", "--config", "tiny.yaml")
    assert code == 0, err
    (first,) = run_dirs()
    before = sorted(p.relative_to(first) for p in first.rglob("*"))
    code, _, err = cli("fit", "--config", first / "config.yaml", "--run.dir", "elsewhere")
    assert code == 0, err
    # the saved config's checkpoint dirpath and logger save_dir pointed into the first run: they move along
    assert sorted(p.relative_to(first) for p in first.rglob("*")) == before
    assert (Path("elsewhere") / "checkpoints" / "last.ckpt").is_file()
    assert (Path("elsewhere") / "csv" / "metrics.csv").is_file()
    saved = yaml.safe_load((Path("elsewhere") / "config.yaml").read_text())
    assert Path(saved["checkpoint"]["dirpath"]) == Path("elsewhere") / "checkpoints"


# --- sample --------------------------------------------------------------------------------------------------


def test_sample_writes_tensor_grid_and_one_png_per_image(cli, image_run):
    ckpt = image_run / "checkpoints" / "last.ckpt"
    code, out, err = cli(
        "sample", "--ckpt_path", ckpt, "--num_samples", "10", "--out_dir", "out", "--seed", "3"
    )
    assert code == 0, err
    samples = torch.load("out/samples.pt")
    assert samples.shape == (10, 1, 8, 8) and samples.dtype == torch.float32
    assert 0.0 <= samples.min() and samples.max() <= 1.0
    assert sorted(p.name for p in Path("out/images").iterdir()) == [f"{i:06d}.png" for i in range(10)]
    with Image.open("out/images/000007.png") as image:
        assert image.size == (8, 8)
    with Image.open("out/grid.png") as grid:  # 10 samples, round(sqrt(10)) = 3 per row, 4 rows
        assert grid.size == (3 * 10 + 2, 4 * 10 + 2)
    assert "10 samples" in out


def test_sample_is_reproducible_with_seed(cli, image_run):
    ckpt = image_run / "checkpoints" / "last.ckpt"
    for out_dir, seed in (("a", 5), ("b", 5), ("c", 6)):
        code, _, err = cli(
            "sample", "--ckpt_path", ckpt, "--num_samples", "6", "--out_dir", out_dir, "--seed", seed
        )
        assert code == 0, err
    a, b, c = (torch.load(f"{d}/samples.pt") for d in "abc")
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert Path("a/grid.png").read_bytes() == Path("b/grid.png").read_bytes()


def test_sample_in_chunks_from_the_ema_or_the_live_generator(cli, image_run):
    ckpt = image_run / "checkpoints" / "last.ckpt"
    code, _, err = cli(
        "sample", "--ckpt_path", ckpt, "--num_samples", "7", "--batch_size", "3", "--out_dir", "ema"
    )
    assert code == 0, err
    code, _, err = cli(
        "sample", "--ckpt_path", ckpt, "--num_samples", "7", "--ema", "false", "--out_dir", "live"
    )
    assert code == 0, err
    ema, live = torch.load("ema/samples.pt"), torch.load("live/samples.pt")
    assert ema.shape == live.shape == (7, 1, 8, 8)
    assert len(list(Path("ema/images").iterdir())) == 7
    assert not torch.allclose(ema, live)  # EMA decay 0.9 after two G steps differs from the live weights


def test_sample_default_out_dir_is_inside_the_run(cli, tmp_path, image_run):
    import shutil

    run = tmp_path / "copied_run"
    shutil.copytree(image_run, run)  # the module's run stays untouched
    code, _, err = cli("sample", "--ckpt_path", run / "checkpoints" / "last.ckpt", "--num_samples", "2")
    assert code == 0, err
    assert torch.load(run / "samples" / "last" / "samples.pt").shape == (2, 1, 8, 8)


def test_sample_toy_gan_writes_tensor_and_scatter(cli, toy_run):
    ckpt = toy_run / "checkpoints" / "last.ckpt"
    code, _, err = cli("sample", "--ckpt_path", ckpt, "--num_samples", "300", "--out_dir", "toy")
    assert code == 0, err
    samples = torch.load("toy/samples.pt")
    assert samples.shape == (300, 2) and samples.dtype == torch.float32
    assert sorted(p.name for p in Path("toy").iterdir()) == ["samples.pt", "scatter.png"]
    with Image.open("toy/scatter.png") as scatter:
        assert min(scatter.size) > 100


def test_sample_for_text_writes_the_files_the_readme_lists(cli):
    """README's `sample` section names every file `sample` writes for a text model, and no file it skips."""
    from helpers.paths import CONFIGS, ROOT

    text = "to be or not to be, that is the question.\n" * 20
    Path("tiny.txt").write_text(text, encoding="utf-8")
    net = "--model.init_args.network.init_args."
    code, _, err = cli(
        *("fit", "--config", CONFIGS / "gpt_shakespeare_char_cpu.yaml", "--data.init_args.path", "tiny.txt"),
        *(f"{net}vocab_size", len(set(text)), f"{net}n_layer", 1, f"{net}n_head", 1, f"{net}n_embd", 16),
        *(f"{net}block_size", 8, "--data.init_args.block_size", 8, "--data.init_args.batch_size", 4),
        *("--model.init_args.lr_scheduler", "null", "--trainer.max_steps", 2),
        *("--trainer.val_check_interval", 2, "--trainer.limit_val_batches", 1, "--trainer.logger", "false"),
    )
    assert code == 0, err
    (run,) = run_dirs()
    args = ("--ckpt_path", run / "checkpoints" / "last.ckpt", "--num_samples", 2, "--max_new_tokens", 5)
    code, _, err = cli("sample", *args, "--out_dir", "text")
    assert code == 0, err
    written = sorted(p.name for p in Path("text").iterdir())
    assert written == ["samples.txt"]
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### `sample`", 1)[1].split("\n### ", 1)[0]
    named = re.findall(r"^- (?:[^`\n]*)`([\w.]+\.(?:pt|txt|png))`", section, flags=re.M)
    assert "samples.txt" in named
    for bullet in re.findall(r"^- .*$", section, flags=re.M):
        assert "always" not in bullet, bullet
