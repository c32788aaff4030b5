"""Small helpers shared by the networks."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """Wraps a conv/linear layer in spectral normalization (Miyato et al. 2018) when ``enabled``."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def xavier(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """Xavier-uniform weights (Glorot & Bengio 2010) with ``gain``; the bias keeps PyTorch's default. Apply it
    before ``maybe_spectral_norm``, whose power iteration starts from the weight it wraps."""
    nn.init.xavier_uniform_(layer.weight, gain)
    return layer


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral = parametrize.is_parametrized(m, "weight")
            if spectral:  # re-attached below: its power iteration must start from the new weight, not the old
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if spectral:
                nn.utils.parametrizations.spectral_norm(m)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
