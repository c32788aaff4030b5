"""Feature extractors for the sample-quality metrics: images (N, C, H, W) in [0, 1] → features (N, D).

- ``InceptionV3Features``: the standard FID InceptionV3 (torch-fidelity's port of the TF 2015-12-05 graph,
  the network torchmetrics and torch-fidelity use), with the TF1-compatible bilinear resize to 299 px.
- ``RandomConvFeatures``: a fixed-seed randomly initialised conv net (needs no download; Naeem et al. 2020
  show random embeddings are usable outside ImageNet-like domains). Its numbers are not FID.
- ``ModuleFeatures``: any ``nn.Module`` (e.g. a domain classifier) given by ``class_path``.

Every extractor has a ``name`` (used in metric names and cache keys), ``num_features``, a ``preprocessing``
description and a ``fingerprint()`` (sha256 of its weights) that enter the reference-statistics cache key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_gen.errors import LitGenError

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
#: sha256 of torch-fidelity's FID InceptionV3 weights (its first 8 digits are the torch.hub prefix in the name)
INCEPTION_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: environment variable naming the weights file on machines without internet
INCEPTION_WEIGHTS_ENV = "LIT_GEN_INCEPTION_WEIGHTS"


def sha256_of_file(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_module(module: nn.Module) -> str:
    """sha256 over the class name and every parameter/buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def to_three_channels(images: Tensor) -> Tensor:
    """Greyscale (N, 1, H, W) → RGB by repetition; RGB unchanged."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats → uint8 with rounding, exactly as ``torchvision.utils.save_image`` writes PNGs, so
    in-memory samples and the same samples saved as PNG give identical features."""
    if images.dtype == torch.uint8:
        return images
    return images.float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


class FeatureExtractor(nn.Module):
    """Base class: ``forward(images)`` → features (N, D); ``extract`` also returns class logits when the
    extractor has them (for the Inception Score), else None. Always in eval mode, never trained."""

    name: str = "features"
    #: True only for the standard FID InceptionV3 weights (sha256 ``INCEPTION_WEIGHTS_SHA256``): the metrics then
    #: carry their literature names (fid, kid, is)
    fid_compatible: bool = False
    #: ``extract`` also returns class logits (for the Inception Score)
    has_logits: bool = False
    num_features: int
    preprocessing: str = ""

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        return self(images), None

    def fingerprint(self) -> str:
        """sha256 of the weights (part of the reference-statistics cache key)."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = sha256_of_module(self)
        return self._fingerprint

    def describe(self) -> dict:
        return {
            "name": self.name,
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "num_features": self.num_features,
            "preprocessing": self.preprocessing,
            "weights_sha256": self.fingerprint(),
        }


class RandomConvFeatures(FeatureExtractor):
    """A fixed-seed random conv embedding (no download). Images are made RGB, resized to ``image_size`` with
    antialiased bilinear interpolation, scaled to [-1, 1], and passed through ``depth`` stride-2 3x3 convs
    (He-normal weights from ``seed``, zero biases, ReLU, widths ``width·2^i``); features are the global
    average of the last map (``width·2^(depth-1)`` dims). Logged as ``fd_random`` etc., never as FID.

    Args:
        seed: seed of the weights (the same seed gives the same network on every machine).
        image_size: input resolution after resizing.
        width: channels of the first conv.
        depth: number of convs.
    """

    def __init__(self, seed: int = 0, image_size: int = 64, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.name, self.image_size = "random", image_size
        rng = torch.Generator().manual_seed(seed)
        layers, channels = [], 3
        for i in range(depth):
            conv = nn.Conv2d(channels, width * 2**i, 3, stride=2, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=rng)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            channels = width * 2**i
        self.net = nn.Sequential(*layers)
        self.num_features = channels
        self.preprocessing = f"rgb, bilinear-antialias-{image_size}, [-1,1]"
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        x = to_three_channels(images.float())
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return self.net(x * 2 - 1).mean(dim=(2, 3))


class ModuleFeatures(FeatureExtractor):
    """Any ``nn.Module`` as a feature extractor (e.g. a domain classifier's penultimate layer). Its output is
    flattened to (N, D).

    Args:
        module: the network; it receives images in [0, 1] (after the optional conversions below).
        name: name used in metric names (``fd_<name>``) and in the cache key.
        image_size: resize to this resolution first (bilinear, antialiased); None keeps the input size.
        channels: convert to 1 (mean over RGB) or 3 (repeat grey) channels first; None keeps them.
    """

    def __init__(
        self,
        module: nn.Module,
        name: str = "custom",
        image_size: int | None = None,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        if channels not in (None, 1, 3):
            raise LitGenError(f"extractor.channels must be 1, 3 or null, got {channels}")
        self.module, self.name, self.image_size, self.channels = module, name, image_size, channels
        self.module.requires_grad_(False)
        self.num_features = int(getattr(module, "num_features", 0)) or None
        self.preprocessing = f"channels={channels}, bilinear-antialias-{image_size}"
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        x = images.float()
        if self.channels == 3:
            x = to_three_channels(x)
        elif self.channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if self.image_size and x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        features = self.module(x).flatten(1)
        self.num_features = features.shape[1]
        return features


def as_extractor(module: nn.Module) -> FeatureExtractor:
    """A ``FeatureExtractor`` unchanged, any other ``nn.Module`` wrapped in ``ModuleFeatures``."""
    if isinstance(module, FeatureExtractor):
        return module
    if not isinstance(module, nn.Module):
        raise LitGenError(f"extractor: expected an nn.Module, got {type(module).__name__}")
    return ModuleFeatures(module, name=type(module).__name__.lower())


def default_inception_path() -> Path:
    """Where torch.hub (and so torchmetrics / torch-fidelity) keeps the downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def resolve_inception_weights(weights_path: str | None, download: bool) -> Path:
    """``weights_path``, else ``$LIT_GEN_INCEPTION_WEIGHTS``, else the torch.hub cache file (downloaded there
    when missing and ``download``). A missing file raises a one-line ``LitGenError`` saying what to put where."""
    explicit = weights_path or os.environ.get(INCEPTION_WEIGHTS_ENV)
    path = Path(explicit).expanduser() if explicit else default_inception_path()
    if path.is_file():
        return path
    hint = (
        f"download {INCEPTION_WEIGHTS_URL} on a machine with internet and put it at '{path}' "
        f"(or point extractor.weights_path / ${INCEPTION_WEIGHTS_ENV} at the file); offline without it, "
        "--extractor lit_gen.metrics.RandomConvFeatures scores with no weights (fd_random etc., not FID)"
    )
    if explicit:
        raise LitGenError(f"extractor.weights_path: Inception weights '{path}' do not exist; {hint}")
    if not download:
        raise LitGenError(f"extractor.weights_path: {INCEPTION_WEIGHTS_FILE} not found at '{path}'; {hint}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_WEIGHTS_URL, str(path), progress=True)
    except Exception as err:  # no internet, proxy, disk: all end in the same instruction
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise LitGenError(
            f"extractor.weights_path: {INCEPTION_WEIGHTS_FILE} not found at '{path}' and the download "
            f"failed ({reason}); {hint}"
        ) from None
    return path


class InceptionV3Features(FeatureExtractor):
    """The FID InceptionV3: 2048-d pool features and 1008 unbiased logits (for the Inception Score).

    Preprocessing (fixed, as in the TF reference implementation and torch-fidelity): greyscale repeated to
    RGB; [0, 1] floats rounded to uint8 like a PNG; resized to 299x299 with torch-fidelity's TF1-compatible
    bilinear interpolation (no antialiasing — torchmetrics' default ``antialias=True`` gives different numbers).

    Args:
        weights_path: the ``weights-inception-2015-12-05-6726825d.pth`` file; default
            ``$LIT_GEN_INCEPTION_WEIGHTS``, else the torch.hub cache (downloaded there when online).
        expected_sha256: the file's sha256 is checked against this. ``None`` skips the check — only for tests
            and benchmarks with stand-in weights. Only the standard file (sha256 ``INCEPTION_WEIGHTS_SHA256``)
            gives the literature names ``fid`` / ``kid`` / ``is``; any other file is named
            ``inception_<first 8 hex digits of its sha256>`` (``fd_inception_1a2b3c4d``...).
        download: allow downloading into the torch.hub cache when no file is found.
    """

    def __init__(
        self,
        weights_path: str | None = None,
        expected_sha256: str | None = INCEPTION_WEIGHTS_SHA256,
        download: bool = True,
    ) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_inception_weights(weights_path, download)
        digest = sha256_of_file(path)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise LitGenError(
                f"extractor.weights_path: '{path}' has sha256 {digest[:16]}..., expected "
                f"{expected_sha256[:16]}... (partial download or another file); delete it and fetch "
                f"{INCEPTION_WEIGHTS_URL} again"
            )
        if (
            expected_sha256 is None
        ):  # unverified file: make sure it holds tensors only before torch-fidelity loads it
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise LitGenError(
                    f"extractor.weights_path: '{path}' is not a state dict ({str(err).splitlines()[0][:160]})"
                ) from None
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], str(path)
            )
        except RuntimeError as err:
            raise LitGenError(
                f"extractor.weights_path: '{path}' does not fit the FID InceptionV3 "
                f"({str(err).splitlines()[0][:160]})"
            ) from None
        self.fid_compatible = digest == INCEPTION_WEIGHTS_SHA256
        self.name = "inception" if self.fid_compatible else f"inception_{digest[:8]}"
        self.has_logits, self.num_features = True, 2048
        self.weights_path, self._fingerprint = str(path), digest
        self.preprocessing = "rgb, uint8 (round), tf1-bilinear-299 (no antialias)"
        self.eval()

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features, logits = self.net(to_uint8(to_three_channels(images)))
        return features.float(), logits.float()

    def forward(self, images: Tensor) -> Tensor:
        return self.extract(images)[0]

    def fingerprint(self) -> str:
        return self._fingerprint
