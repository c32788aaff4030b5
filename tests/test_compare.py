"""``python -m lit_gen compare``: three tiny runs that differ in learning rate, from W&B files and CSV."""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import run_dirs
from PIL import Image
from test_wandb import TINY

from lit_gen.commands.compare import read_wandb_run

LRS = [0.0001, 0.0003, 0.001]


@pytest.fixture
def three_runs(cli, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    for i, lr in enumerate(LRS):
        code, _, err = cli(
            "fit",
            "--config",
            config,
            f"--run.name=lr{i}",
            f"--model.generator_optimizer.init_args.lr={lr}",
            f"--model.discriminator_optimizer.init_args.lr={lr}",
        )
        assert code == 0, err
    dirs = run_dirs()
    assert len(dirs) == 3
    return dirs


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_table(rows):
    assert [row["run"].split("/")[0] for row in rows] == ["lr0", "lr1", "lr2"]
    for row, lr in zip(rows, LRS):
        # the hyper-parameters that differ: both learning rates, nothing else
        lr_columns = [k for k in row if k.endswith("optimizer.lr")]
        assert lr_columns == ["model.discriminator_optimizer.lr", "model.generator_optimizer.lr"]
        assert float(row["model.generator_optimizer.lr"]) == pytest.approx(lr)
        # train/lr_g is logged every batch and equals the configured LR (no scheduler)
        assert float(row["train/lr_g final"]) == pytest.approx(lr)
        assert float(row["train/lr_g min"]) == pytest.approx(lr)
        assert int(row["step"]) == 6  # the last evaluation, after 6 batches
        assert float(row["val/modes final"]) <= float(row["val/modes max"]) <= 25
    columns = list(rows[0])
    assert not any(c.startswith(("run.", "trainer.default_root_dir")) for c in columns)


def test_compare_three_runs_from_wandb_files_and_from_csv(cli, three_runs, tmp_path):
    code, out, err = cli(
        "compare",
        "runs",
        "--metrics",
        "val/modes",
        "train/lr_g",
        "train/d_loss",
        "--out_dir",
        tmp_path / "report",
    )
    assert code == 0, err
    rows = read_csv(tmp_path / "report" / "compare.csv")
    check_table(rows)
    assert float(rows[0]["wall_time_s"]) > 0
    markdown = (tmp_path / "report" / "compare.md").read_text().splitlines()
    assert markdown[0].startswith("| run | model.discriminator_optimizer.lr | model.generator_optimizer.lr |")
    assert len(markdown) == 2 + 3
    assert "lr0/" in out and "val/modes final" in out
    with Image.open(tmp_path / "report" / "compare.png") as png:
        assert png.format == "PNG" and png.width > 300

    # a run killed mid-write leaves a truncated W&B file: read up to the damage
    (wandb_file,) = three_runs[0].glob("wandb/offline-run-*/run-*.wandb")
    whole = read_wandb_run([wandb_file])[1]["train/d_loss"]
    truncated = tmp_path / "run-truncated.wandb"
    truncated.write_bytes(wandb_file.read_bytes()[: wandb_file.stat().st_size * 2 // 3])
    part = read_wandb_run([truncated])[1].get("train/d_loss", [])
    assert len(part) < len(whole) and part == whole[: len(part)]

    # without the W&B files, the CSV logs give the same table
    wandb_rows = rows
    for run_dir in three_runs:
        shutil.rmtree(run_dir / "wandb")
    code, _, err = cli(
        "compare", *three_runs, "--metrics", "val/modes", "train/lr_g", "--out_dir", tmp_path / "csv"
    )
    assert code == 0, err
    csv_rows = read_csv(tmp_path / "csv" / "compare.csv")
    check_table(csv_rows)
    for a, b in zip(wandb_rows, csv_rows):
        assert float(a["val/modes final"]) == float(b["val/modes final"])
        assert float(a["train/lr_g final"]) == pytest.approx(float(b["train/lr_g final"]))


def test_compare_bad_input_is_one_line(cli, tmp_path):
    code, _, err = cli("compare", tmp_path / "no_such_run")
    assert code == 2
    assert err.strip().splitlines() == [
        f"lit_gen: error: compare: no such run directory '{tmp_path / 'no_such_run'}'"
    ]
    (tmp_path / "empty").mkdir()
    code, _, err = cli("compare", tmp_path / "empty")
    assert code == 2 and "holds none" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("compare")
    assert code == 2 and "give run directories" in err
