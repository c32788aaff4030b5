"""``python -m lit_gen compare``: three tiny runs that differ in learning rate, from W&B files and CSV."""

from __future__ import annotations

import csv
import os
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.configs import TINY_WANDB_GAN
from helpers.runs import run_dirs
from PIL import Image

from lit_gen.commands.compare import draw_curves, group_runs, load_runs, mean_curve, read_wandb_run

LRS = [0.0001, 0.0003, 0.001]


@pytest.fixture
def three_runs(cli, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_WANDB_GAN)
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


# --- job arrays and groups of runs ------------------------------------------------------------------------------


def submit_array(cli, config, name: str, lr: float, tasks: int) -> Path:
    """A job array as ``submit --array`` leaves it (a stand-in ``sbatch``), each task then run as its script
    runs it: ``fit --config <array>/config.yaml --run.dir <array>/task-<i> --seed_everything <seed + i>``."""
    code, out, err = cli(
        "submit", "--config", config, f"--run.name={name}", "--array", tasks,
        f"--model.generator_optimizer.init_args.lr={lr}", f"--model.discriminator_optimizer.init_args.lr={lr}",
    )  # fmt: skip
    assert code == 0, err
    array = Path(re.search(r"run directory: (\S+)", out)[1])
    for i in range(tasks):
        code, _, err = cli(
            "fit", "--config", array / "config.yaml", "--run.dir", array / f"task-{i}", "--seed_everything", i
        )
        assert code == 0, err
    return array


@pytest.fixture
def two_arrays(cli, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/bash\necho 1234\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_WANDB_GAN)
    return [submit_array(cli, config, name, lr, tasks=2) for name, lr in [("a", 0.0001), ("b", 0.001)]]


def test_an_arrays_tasks_are_its_runs_and_their_mean_and_std_is_reported(cli, two_arrays, tmp_path):
    a, b = two_arrays
    # the array's own directory: exactly its two tasks, then their mean
    code, out, err = cli("compare", a, "--metrics", "val/modes", "train/d_loss", "--out_dir", tmp_path / "a")
    assert code == 0, err
    rows = read_csv(tmp_path / "a" / "compare.csv")
    assert [row["run"] for row in rows] == ["task-0", "task-1", f"{a.parent.name}/{a.name}: mean of 2"]
    assert [row["seed_everything"] for row in rows] == ["0", "1", ""]  # the only key that differs
    tasks, mean = rows[:2], rows[2]
    for column in ("val/modes final", "val/modes max", "train/d_loss final", "train/d_loss min"):
        values = [float(row[column]) for row in tasks]
        assert float(mean[column]) == pytest.approx(statistics.mean(values))
        assert float(mean[f"{column} std"]) == pytest.approx(statistics.stdev(values))
        assert all(row[f"{column} std"] == "" for row in tasks)
    assert mean["step"] == "6"
    for task, row in zip(sorted(a.glob("task-*")), tasks):  # each row holds its own task's numbers
        d_loss = read_csv(next(task.glob("**/metrics.csv")))
        assert float(row["train/d_loss final"]) == pytest.approx(
            float([r for r in d_loss if r.get("train/d_loss")][-1]["train/d_loss"])
        )
    markdown = (tmp_path / "a" / "compare.md").read_text()
    assert "| val/modes final | val/modes final std |" in markdown
    # the folder holding the array: the same rows, none for the array's directory
    code, out, err = cli("compare", a.parent, "--metrics", "val/modes", "train/d_loss", "--out_dir", "above")
    assert code == 0, err
    assert read_csv(Path("above") / "compare.csv") == rows

    # the folder above both arrays: their four tasks (no row for an array's directory), a mean per array
    code, out, err = cli("compare", "runs", "--metrics", "val/modes", "--out_dir", tmp_path / "both")
    assert code == 0, err
    rows = read_csv(tmp_path / "both" / "compare.csv")
    names = [f"{array.parent.name}/{array.name}" for array in (a, b)]
    assert [row["run"] for row in rows] == [
        f"{names[0]}/task-0", f"{names[0]}/task-1", f"{names[0]}: mean of 2",
        f"{names[1]}/task-0", f"{names[1]}/task-1", f"{names[1]}: mean of 2",
    ]  # fmt: skip
    assert [row["model.generator_optimizer.lr"] for row in rows] == ["0.0001"] * 3 + ["0.001"] * 3

    # the plot: per array, a mean line labelled with the array and its seeds, over a band of one std
    runs = load_runs(["runs"])
    groups = group_runs(runs)
    fig = draw_curves(groups, ["val/modes", "train/d_loss"])
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert labels == [f"{name}: mean ± std, seeds 0, 1" for name in names]
    panel = fig.axes[1]
    mean_line = next(line for line in panel.get_lines() if line.get_label() == labels[0])
    steps, mean, std = mean_curve(groups[0].runs, "train/d_loss")
    curves = [[v for _, v in run.history["train/d_loss"]] for run in groups[0].runs]
    assert list(mean_line.get_ydata()) == pytest.approx(np.mean(curves, axis=0))
    assert std == pytest.approx(np.std(curves, axis=0, ddof=1))
    (band, *_) = panel.collections  # fill_between: mean ± std
    lows = band.get_paths()[0].vertices[:, 1]
    assert lows.min() == pytest.approx(min(m - s for m, s in zip(mean, std)))
    with Image.open(tmp_path / "both" / "compare.png") as png:
        assert png.format == "PNG"


def write_run(run_dir: Path, config: dict, history: list[tuple[int, float]]) -> Path:
    """A run as ``fit`` leaves it with the CSV logger only: ``config.yaml`` and ``csv/metrics.csv``."""
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    lines = ["step,val/fid"] + [f"{step},{value}" for step, value in history]
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_group_by_a_config_key(cli, tmp_path):
    model = {"class_path": "lit_gen.models.GAN", "init_args": {"loss": "lit_gen.losses.Hinge", "width": 8}}
    fids = {"Hinge": [[30.0, 20.0], [34.0, 26.0], [29.0, 17.0]], "Minimax": [[40.0, 35.0], [44.0, 31.0]]}
    for loss, runs in fids.items():
        for i, (first, last) in enumerate(runs):
            init_args = {**model["init_args"], "loss": f"lit_gen.losses.{loss}", "width": 8 * (i + 1)}
            config = {"seed_everything": 0, "model": {**model, "init_args": init_args}}
            write_run(tmp_path / "runs" / f"{loss}{i}", config, [(3, first), (6, last)])
    code, out, err = cli("compare", "runs", "--group-by", "model.loss", "--out_dir", tmp_path / "report")
    assert code == 0, err
    rows = read_csv(tmp_path / "report" / "compare.csv")
    assert [row["run"] for row in rows] == [
        "Hinge0", "Hinge1", "Hinge2", "model.loss=Hinge: mean of 3", "Minimax0", "Minimax1",
        "model.loss=Minimax: mean of 2",
    ]  # fmt: skip
    for loss, row in [("Hinge", rows[3]), ("Minimax", rows[6])]:
        finals = [last for _, last in fids[loss]]
        assert float(row["val/fid final"]) == pytest.approx(statistics.mean(finals))
        assert float(row["val/fid final std"]) == pytest.approx(statistics.stdev(finals))
        assert row["model.loss"] == loss and row["model.width"] == ""  # shared by the group / not
    fig = draw_curves(group_runs(load_runs(["runs"]), "model.loss"), ["val/fid"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "model.loss=Hinge: mean ± std of 3 runs",
        "model.loss=Minimax: mean ± std of 2 runs",
    ]

    code, _, err = cli("compare", "runs", "--group-by", "model.los")
    assert code == 2
    assert err.strip().splitlines() == [
        "lit_gen: error: compare.group_by: 'model.los' is not in the runs' configs "
        "(keys that differ: model.loss, model.width)"
    ]
