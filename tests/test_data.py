"""DataModules: shapes, value ranges, seeded splits and shuffling, the PacGAN mixtures, on-disk datasets; and the
toy mode metric (ModeCoverage) on constructed samples."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request

import pytest
import torch
import yaml
from helpers.paths import CONFIGS

from lit_gen.data import CIFAR10, MNIST, Digits, FashionMNIST, Grid, ImageFolder, Ring
from lit_gen.errors import LitGenError
from lit_gen.metrics.modes import ModeCoverage


def _first_batch(datamodule, train: bool = True):
    datamodule.setup("fit")
    loader = datamodule.train_dataloader() if train else datamodule.val_dataloader()
    return next(iter(loader))


# --- embedded digits -----------------------------------------------------------------------------------------


def test_digits_images_are_upsampled_in_unit_range_with_a_seeded_split():
    dm = Digits(image_size=32, val_fraction=0.1, batch_size=16)
    images, labels = _first_batch(dm)
    assert images.shape == (16, 1, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
    assert labels.shape == (16,)
    assert len(dm.train_set) + len(dm.val_set) == 1797
    assert len(dm.val_set) == round(1797 * 0.1)
    assert dm.image_shape == (1, 32, 32)
    again = Digits(image_size=32, val_fraction=0.1, batch_size=16)
    again.setup("fit")
    assert list(again.val_set.indices) == list(dm.val_set.indices)
    other = Digits(image_size=32, val_fraction=0.1, batch_size=16, seed=1)
    other.setup("fit")
    assert list(other.val_set.indices) != list(dm.val_set.indices)


def test_digits_at_native_resolution():
    images, _ = _first_batch(Digits(image_size=8, batch_size=4))
    assert images.shape == (4, 1, 8, 8)


def test_training_order_is_seeded_and_drops_the_last_partial_batch():
    def order(seed: int) -> list[torch.Tensor]:
        dm = Digits(image_size=8, batch_size=100, seed=seed)
        dm.setup("fit")
        return [labels for _, labels in dm.train_dataloader()]

    first, second, other = order(0), order(0), order(3)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert all(len(batch) == 100 for batch in first)
    assert len(first) == (1797 - 180) // 100


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": -3}, {"num_workers": -1}])
def test_bad_loader_settings_name_the_key(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(LitGenError, match=f"data.{key}"):
        Digits(**kwargs)


# --- 2-D Gaussian mixtures -----------------------------------------------------------------------------------


def test_ring_is_pacgans_eight_modes_on_the_unit_circle():
    ring = Ring()
    assert ring.modes.shape == (8, 2) and ring.std == 0.01
    assert torch.allclose(ring.modes.norm(dim=1), torch.ones(8), atol=1e-6)
    angles = torch.atan2(ring.modes[:, 1], ring.modes[:, 0]).remainder(2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8) * (2 * math.pi / 8), atol=1e-6)


def test_grid_is_pacgans_twenty_five_modes():
    grid = Grid()
    assert grid.modes.shape == (25, 2) and grid.std == 0.05
    expected = {(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}
    assert {tuple(int(round(v)) for v in m) for m in grid.modes.tolist()} == expected


def test_mixture_samples_sit_around_their_modes_with_the_right_spread():
    grid = Grid(num_train=20_000, num_val=100, batch_size=50)
    grid.setup("fit")
    points, index = grid.train_set.tensors
    assert points.shape == (20_000, 2) and index.shape == (20_000,)
    offsets = points - grid.modes[index]
    assert offsets.std().item() == pytest.approx(0.05, rel=0.05)
    assert offsets.mean(dim=0).abs().max() < 0.005
    counts = torch.bincount(index, minlength=25).float()
    assert counts.min() > 0.8 * 20_000 / 25  # equal weights
    batch_points, batch_index = _first_batch(grid)
    assert batch_points.shape == (50, 2) and batch_index.shape == (50,)


def test_mixture_draw_is_seeded():
    a, b, c = Ring(num_train=64, seed=5), Ring(num_train=64, seed=5), Ring(num_train=64, seed=6)
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])


def test_bad_mixture_settings_name_the_key():
    with pytest.raises(LitGenError, match="data.std"):
        Ring(std=0.0)
    with pytest.raises(LitGenError, match="data.modes"):
        Ring(num_modes=0)


# --- torchvision datasets on disk ----------------------------------------------------------------------------


def test_mnist_reads_the_real_files(mnist_dir):
    dm = MNIST(data_dir=str(mnist_dir), download=False, batch_size=32, num_workers=0)
    images, labels = _first_batch(dm)
    assert images.shape == (32, 1, 28, 28)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert len(dm.train_set) == 1_000 and len(dm.val_set) == 1_000
    assert set(labels.tolist()) <= set(range(10))
    # real digits: about 19 % of MNIST pixels are ink
    assert 0.1 < (images > 0.5).float().mean().item() < 0.3


def test_mnist_resizes_to_image_size(mnist_dir):
    images, _ = _first_batch(MNIST(data_dir=str(mnist_dir), download=False, image_size=32, batch_size=4))
    assert images.shape == (4, 1, 32, 32)


def test_cifar10_reads_the_pickle_layout(cifar10_dir, cifar10_skip_md5):
    dm = CIFAR10(data_dir=str(cifar10_dir), download=False, batch_size=8, num_workers=0)
    images, labels = _first_batch(dm)
    assert images.shape == (8, 3, 32, 32) and 0.0 <= images.min() and images.max() <= 1.0
    assert len(dm.train_set) == 5 * 8 and len(dm.val_set) == 16


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST, CIFAR10])
def test_missing_dataset_without_download_names_the_path(cls, tmp_path):
    missing = tmp_path / "nowhere"
    dm = cls(data_dir=str(missing), download=False, num_workers=0)
    dm.prepare_data()  # nothing to download
    with pytest.raises(LitGenError, match=r"data\.data_dir: .*" + str(missing).replace("/", ".")):
        dm.setup("fit")
    assert not missing.exists()


def test_missing_mnist_files_are_named(tmp_path):
    """Only the test split's files present (decompressed): the error names the two train files, nothing else."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    dm = MNIST(data_dir=str(tmp_path), download=False, num_workers=0)
    with pytest.raises(LitGenError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert f"'{raw}' lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, decompressed" in message
    assert "t10k" not in message


@pytest.mark.parametrize("cls", [MNIST, CIFAR10])
def test_a_download_without_network_leaves_nothing_behind(cls, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    fresh = tmp_path / "fresh" / "data"
    with pytest.raises(LitGenError, match=r"data\.data_dir: could not download .*name resolution"):
        cls(data_dir=str(fresh), download=True, num_workers=0).prepare_data()
    assert not (tmp_path / "fresh").exists()  # no empty data folder (nor MNIST/raw in it)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(LitGenError, match="could not download"):
        cls(data_dir=str(existing), download=True, num_workers=0).prepare_data()
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_quickstart_comment_counts_the_epochs_and_batches_of_its_data(tmp_path):
    """configs/gan.yaml says how many epochs of how many batches its max_steps are: check against the data."""
    text = (CONFIGS / "gan.yaml").read_text()
    config = yaml.safe_load(text)
    epochs, batches = map(int, re.search(r"(\d+) epochs of (\d+) batches", text).groups())
    dm = Digits(**config["data"]["init_args"])
    dm.setup("fit")
    per_epoch = len(dm.train_dataloader())
    assert batches == per_epoch
    gan_batches = config["trainer"]["max_steps"] // 2  # one D and one G step a batch (n_critic: 1)
    assert config["model"]["init_args"]["n_critic"] == 1
    assert epochs == gan_batches / per_epoch


# --- any folder of images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_converts_resizes_and_crops(image_folder, channels):
    dm = ImageFolder(root=str(image_folder), image_size=16, channels=channels, batch_size=4, num_workers=0)
    images, _ = _first_batch(dm)
    assert images.shape == (4, channels, 16, 16)
    assert 0.0 <= images.min() and images.max() <= 1.0
    # all 20 PNGs, searched recursively; notes.txt ignored
    assert len(dm.train_set) + len(dm.val_set) == 20
    assert dm.image_shape == (channels, 16, 16)


def test_image_folder_loads_in_worker_processes(image_folder):
    dm = ImageFolder(root=str(image_folder), image_size=8, batch_size=4, num_workers=1)
    images, _ = _first_batch(dm)
    assert images.shape == (4, 3, 8, 8)


def test_image_folder_val_fraction_zero_holds_out_nothing(image_folder):
    dm = ImageFolder(root=str(image_folder), image_size=8, val_fraction=0.0, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_set) == 20 and len(dm.val_set) == 0
    for bad in (1.0, -0.1):
        with pytest.raises(LitGenError, match=f"data.val_fraction must be in \\[0, 1\\), got {bad}"):
            ImageFolder(root=str(image_folder), val_fraction=bad).setup("fit")


def test_image_folder_errors_name_the_root(tmp_path):
    with pytest.raises(LitGenError, match="data.root: .*missing"):
        ImageFolder(root=str(tmp_path / "missing"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no images here")
    dm = ImageFolder(root=str(tmp_path / "empty"))
    with pytest.raises(LitGenError, match="data.root: no images .*empty"):
        dm.setup("fit")
    with pytest.raises(LitGenError, match="data.channels"):
        ImageFolder(root=str(tmp_path), channels=2)


# --- toy mode metrics (VEEGAN / PacGAN protocol) -------------------------------------------------------------


def test_mode_coverage_when_every_mode_is_hit_evenly():
    ring = Ring()
    metric = ModeCoverage(ring.modes, ring.std)
    metric.update(ring.modes.repeat(3, 1))
    result = metric.compute()
    assert result["modes"].item() == 8
    assert result["high_quality"].item() == pytest.approx(1.0)
    assert result["reverse_kl"].item() == pytest.approx(0.0, abs=1e-6)


def test_mode_coverage_with_missed_modes_and_off_mode_points():
    ring = Ring()  # std 0.01: high quality means within 0.03 of the nearest mode
    m = ring.modes
    dx = torch.tensor([1.0, 0.0])
    samples = torch.cat(
        [
            m[0].repeat(4, 1),  # 4 exactly on mode 0
            (m[1] + 0.02 * dx).repeat(2, 1),  # 2 at 2 std from mode 1
            (m[2] + 0.029 * dx)[None],  # 1 just inside 3 std of mode 2
            (m[3] + 0.031 * dx)[None],  # just outside 3 std of mode 3: low quality
            torch.zeros(2, 2),  # the centre of the ring: far from every mode
        ]
    )
    metric = ModeCoverage(m, ring.std)
    metric.update(samples[:5])  # the states add up over updates
    metric.update(samples[5:])
    result = metric.compute()
    assert result["modes"].item() == 3
    assert result["high_quality"].item() == pytest.approx(7 / 10)
    q = [4 / 7, 2 / 7, 1 / 7]
    assert result["reverse_kl"].item() == pytest.approx(sum(p * math.log(p * 8) for p in q), rel=1e-5)


def test_mode_coverage_capturing_no_mode_has_the_worst_reverse_kl():
    """No high-quality sample: the reverse KL is that of all samples on one mode, log 8, the largest any
    histogram reaches — not 0, the value of a perfect generator."""
    ring = Ring()
    metric = ModeCoverage(ring.modes, ring.std)
    metric.update(torch.zeros(3, 2))  # the centre of the ring: far from every mode
    nothing = metric.compute()
    assert nothing["modes"].item() == 0 and nothing["high_quality"].item() == 0.0
    assert nothing["reverse_kl"].item() == pytest.approx(math.log(8), rel=1e-6)
    metric.reset()
    metric.update(ring.modes[:1].repeat(3, 1))
    assert metric.compute()["reverse_kl"].item() == pytest.approx(math.log(8), rel=1e-6)
    metric.update(ring.modes[1:2])
    assert metric.compute()["reverse_kl"].item() < math.log(8)


def test_mode_coverage_threshold_is_in_standard_deviations():
    grid = Grid()  # std 0.05
    point = grid.modes[12:13] + torch.tensor([[0.12, 0.0]])  # 2.4 std from mode 12
    strict, default = ModeCoverage(grid.modes, grid.std, threshold=2.0), ModeCoverage(grid.modes, grid.std)
    strict.update(point)
    default.update(point)
    assert strict.compute()["modes"].item() == 0 and default.compute()["modes"].item() == 1
