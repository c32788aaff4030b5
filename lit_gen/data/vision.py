"""torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10, CelebA) and any folder of images."""

from __future__ import annotations

import contextlib
import re
import shutil
import tarfile
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets, transforms

from lit_gen.data.base import DataModule
from lit_gen.errors import LitGenError


class _TorchvisionImages(DataModule):
    """Resize + centre-crop to ``image_size``, ToTensor ([0, 1]); the official test split serves as validation."""

    channels = 3
    default_size = 32

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        image_size: int | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.data_dir, self.download = Path(data_dir).expanduser(), download
        self.image_size = image_size or self.default_size
        self.image_shape = (self.channels, self.image_size, self.image_size)

    def transform(self) -> transforms.Compose:
        return transforms.Compose(
            [
                transforms.Resize(self.image_size),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
            ]
        )

    def make_dataset(self, train: bool, download: bool) -> Dataset:
        raise NotImplementedError

    #: said after the missing files' names
    files_note = ""

    def expected_files(self) -> list[Path]:
        """The files torchvision looks for, all in one folder (to name the missing ones); empty where not listed."""
        return []

    def _dataset(self, train: bool, download: bool) -> Dataset:
        try:
            return self.make_dataset(train, download)
        except (RuntimeError, OSError, EOFError, tarfile.TarError) as err:  # URLError is an OSError
            name = type(self).__name__
            if download:
                raise LitGenError(
                    f"data.data_dir: could not download {name} into '{self.data_dir}' "
                    f"({_download_reason(err)}); without network, copy the dataset there"
                    f"{self._missing_hint()} and set data.download=false"
                ) from None
            raise LitGenError(
                f"data.data_dir: {name} not found under '{self.data_dir}'{self._missing_hint()}; set "
                "data.download=true to download it, or point data.data_dir at it"
            ) from None

    def _missing_hint(self) -> str:
        """`` ('<folder>' lacks <file>, ...)`` for the expected files that are not there."""
        missing = [path for path in self.expected_files() if not path.is_file()]
        if not missing:
            return ""
        return f" ('{missing[0].parent}' lacks {', '.join(p.name for p in missing)}{self.files_note})"

    def prepare_data(self) -> None:
        if self.download:
            # a failed download (no network) leaves nothing behind: no empty data_dir, no partial archive
            created = [p for p in (self.data_dir, *self.data_dir.parents) if not p.exists()]
            before = set(self.data_dir.rglob("*")) if self.data_dir.is_dir() else set()
            try:
                self._dataset(train=True, download=True)
                self._dataset(train=False, download=True)
            except LitGenError:
                new = set(self.data_dir.rglob("*")) - before if self.data_dir.is_dir() else set()
                for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                for path in created:  # deepest first
                    with contextlib.suppress(OSError):
                        path.rmdir()
                raise

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(train=True, download=False)
            self.val_set = self._dataset(train=False, download=False)


def _download_reason(err: BaseException) -> str:
    """The first network error in torchvision's message (MNIST lists one per mirror), else its first line."""
    text = " ".join(str(err).split())
    match = re.search(r"<urlopen error .*?>", text)
    return match.group(0) if match else (text[:200] or type(err).__name__)


class _MNISTFamily(_TorchvisionImages):
    """torchvision's MNIST layout: four decompressed files in ``{data_dir}/{class name}/raw``."""

    channels, default_size = 1, 28
    torchvision_class = datasets.MNIST
    files_note = ", decompressed (not .gz)"

    def make_dataset(self, train: bool, download: bool) -> Dataset:
        return self.torchvision_class(
            self.data_dir, train=train, download=download, transform=self.transform()
        )

    def expected_files(self) -> list[Path]:
        raw = self.data_dir / self.torchvision_class.__name__ / "raw"
        return [raw / Path(name).stem for name, _ in self.torchvision_class.resources]


class MNIST(_MNISTFamily):
    """MNIST, 28 px greyscale (torchvision layout: ``{data_dir}/MNIST/raw``, files decompressed)."""

    torchvision_class = datasets.MNIST


class FashionMNIST(_MNISTFamily):
    """Fashion-MNIST, 28 px greyscale (``{data_dir}/FashionMNIST/raw``)."""

    torchvision_class = datasets.FashionMNIST


class CIFAR10(_TorchvisionImages):
    """CIFAR-10, 32 px RGB."""

    channels, default_size = 3, 32

    def make_dataset(self, train: bool, download: bool) -> Dataset:
        return datasets.CIFAR10(self.data_dir, train=train, download=download, transform=self.transform())

    def expected_files(self) -> list[Path]:
        cifar = datasets.CIFAR10
        folder = self.data_dir / cifar.base_folder
        return [folder / name for name, _ in cifar.train_list + cifar.test_list] + [
            folder / cifar.meta["filename"]
        ]


class CelebA(_TorchvisionImages):
    """CelebA aligned faces, centre-cropped to 178 then resized (64 px by default); 'valid' split for validation."""

    channels, default_size = 3, 64

    def transform(self) -> transforms.Compose:
        return transforms.Compose(
            [transforms.CenterCrop(178), transforms.Resize(self.image_size), transforms.ToTensor()]
        )

    def make_dataset(self, train: bool, download: bool) -> Dataset:
        split = "train" if train else "valid"
        return datasets.CelebA(self.data_dir, split=split, download=download, transform=self.transform())


class ImageFolder(DataModule):
    """Any folder of images (searched recursively), resized and centre-cropped; a seeded split for validation.

    Args:
        root: the folder. Images may sit directly in it or in class sub-folders.
        image_size: output resolution.
        channels: 1 (greyscale) or 3 (RGB); images are converted.
        val_fraction: share held out for validation/evaluation.
    """

    extensions = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int = 3,
        val_fraction: float = 0.05,
        batch_size: int = 64,
        num_workers: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if channels not in (1, 3):
            raise LitGenError(f"data.channels must be 1 or 3, got {channels}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise LitGenError(f"data.root: image folder '{self.root}' does not exist")
        self.image_size, self.channels, self.val_fraction = image_size, channels, val_fraction
        self.image_shape = (channels, image_size, image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.extensions)
        if not files:
            raise LitGenError(
                f"data.root: no images ({', '.join(self.extensions)}) found under '{self.root}'"
            )
        mode = "L" if self.channels == 1 else "RGB"
        transform = transforms.Compose(
            [
                _Convert(mode),
                transforms.Resize(self.image_size),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
            ]
        )
        self.train_set, self.val_set = self.split(_Files(files, transform), self.val_fraction)


class _Files(Dataset):
    """A flat list of image files; yields (image, 0)."""

    def __init__(self, files: list[Path], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as image:
                return self.transform(image), 0
        except (OSError, SyntaxError, ValueError) as err:  # PIL: unidentified, truncated or broken files
            raise LitGenError(
                f"data.root: cannot read the image '{path}' ({err}); remove or replace it"
            ) from None


class _Convert:
    """PIL mode conversion as a picklable transform (DataLoader workers)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image):
        return image.convert(self.mode)
