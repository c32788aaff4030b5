"""LightningDataModules. Images come out as float tensors in [0, 1], points as float (N, 2) tensors."""

from lit_gen.data.base import DataModule
from lit_gen.data.digits import Digits
from lit_gen.data.pixels import PixelTokens
from lit_gen.data.text import Text
from lit_gen.data.toy import GaussianMixture, Grid, Ring
from lit_gen.data.vision import CIFAR10, MNIST, CelebA, FashionMNIST, ImageFolder

__all__ = [
    "CIFAR10",
    "MNIST",
    "CelebA",
    "DataModule",
    "Digits",
    "FashionMNIST",
    "GaussianMixture",
    "Grid",
    "ImageFolder",
    "PixelTokens",
    "Ring",
    "Text",
]
