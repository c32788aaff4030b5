"""``python -m lit_gen evaluate``: a tiny checkpoint, a folder of images, precomputed statistics, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_gen.metrics.features import INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE

TINY_GAN = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: lit_gen.models.GAN
  init_args:
    generator:
      class_path: lit_gen.nets.DCGANGenerator
      init_args: {latent_dim: 8, channels: 1, image_size: 32, width: 8}
    discriminator:
      class_path: lit_gen.nets.DCGANDiscriminator
      init_args: {channels: 1, image_size: 32, width: 8}
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 32, batch_size: 16}
"""

RANDOM = ["--extractor", "lit_gen.metrics.RandomConvFeatures", "--extractor.image_size", "16"]
FAST = ["--kid_subsets", "3", "--kid_subset_size", "50", "--cache_dir", "stats", "--progress", "false"]


@pytest.fixture
def checkpoint(cli) -> Path:
    Path("tiny.yaml").write_text(TINY_GAN)
    code, _, err = cli("fit", "--config", "tiny.yaml")
    assert code == 0, err
    (ckpt,) = Path("runs").glob("tiny/*/checkpoints/last.ckpt")
    return ckpt


def test_evaluate_a_checkpoint_writes_the_json_and_prints_the_table(cli, checkpoint):
    code, out, err = cli(
        "evaluate",
        "--ckpt_path",
        checkpoint,
        "--num_samples",
        "60",
        "--batch_size",
        "25",
        "--split",
        "val",
        *RANDOM,
        *FAST,
    )
    assert code == 0, err
    assert "fd_random" in out and "num_fake" in out and "fid" not in out
    record = json.loads((checkpoint.parent.parent / "eval" / "last-random.json").read_text())
    assert set(record["metrics"]) == {
        "fd_random", "kd_random", "kd_random_std", "precision_random", "recall_random", "density_random",
        "coverage_random",
    }  # fmt: skip
    assert record["num_fake"] == 60 and record["num_real"] == 180 and record["num_real_features"] == 180
    assert record["extractor"]["name"] == "random" and len(record["extractor"]["weights_sha256"]) == 64
    key = record["reference"]["key"]
    assert (
        key["split"] == "val" and key["resolution"] == 32 and key["dataset"]["class_path"].endswith("Digits")
    )
    assert Path(
        record["reference"]["path"]
    ).is_file()  # the datamodule came from the checkpoint; stats cached


def test_evaluate_a_folder_against_data_and_against_precomputed_stats(cli, checkpoint):
    code, _, err = cli("sample", "--ckpt_path", checkpoint, "--num_samples", "40", "--out_dir", "samples")
    assert code == 0, err
    data = ["--data", "lit_gen.data.Digits", "--split", "val"]
    code, _, err = cli(
        "evaluate", "--images", "samples/images", *data, *RANDOM, *FAST, "--out", "folder.json"
    )
    assert code == 0, err
    folder = json.loads(Path("folder.json").read_text())
    assert folder["num_fake"] == 40 and folder["source"] == {"images": "samples/images"}
    # the raw tensor and its PNGs agree (PNG rounding only)
    code, _, err = cli(
        "evaluate", "--images", "samples/samples.pt", *data, *RANDOM, *FAST, "--out", "pt.json"
    )
    assert code == 0, err
    raw = json.loads(Path("pt.json").read_text())
    assert raw["metrics"]["fd_random"] == pytest.approx(folder["metrics"]["fd_random"], rel=1e-2)
    # precompute the statistics (like pytorch-fid --save-stats), then evaluate against the file
    code, out, err = cli("evaluate", "--stats-only", "true", *data, *RANDOM, *FAST, "--out", "ref.npz")
    assert code == 0 and Path("ref.npz").is_file(), err
    code, _, err = cli(
        "evaluate", "--images", "samples/images", "--stats", "ref.npz", *RANDOM, *FAST, "--out", "s.json"
    )
    assert code == 0, err
    stats = json.loads(Path("s.json").read_text())
    assert stats["metrics"] == pytest.approx(folder["metrics"], rel=1e-6)
    assert stats["reference"]["key_hash"] == folder["reference"]["key_hash"]


def test_evaluate_user_mistakes_are_one_line_errors(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    Path("imgs").mkdir()
    code, _, err = cli(
        "evaluate", "--images", "imgs", "--stats", "x.npz", "--extractor", "lit_gen.metrics.InceptionV3Features",
        "--extractor.download", "false",
    )  # fmt: skip
    assert (
        code == 2 and err.count("\n") == 1 and INCEPTION_WEIGHTS_FILE in err and INCEPTION_WEIGHTS_ENV in err
    )
    code, _, err = cli("evaluate", "--images", "imgs", "--stats", "x.npz", *RANDOM)
    assert code == 2 and "x.npz' does not exist" in err and err.count("\n") == 1
    code, _, err = cli("evaluate", "--images", "imgs", "--data", "lit_gen.data.Digits", *RANDOM, *FAST)
    assert code == 2 and "no images" in err and err.count("\n") == 1
    code, _, err = cli("evaluate", "--images", "imgs", *RANDOM)
    assert code == 2 and "--data" in err and err.count("\n") == 1
