"""Stand-ins for tests and benchmarks on machines without downloads (not for results).

- ``save_random_inception_weights``: a randomly initialised FID InceptionV3 state dict, so that the whole FID
  pipeline runs without torch-fidelity's real weights.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from torch import nn


def save_random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Writes a randomly initialised state dict of the FID InceptionV3 architecture to ``path``.

    For tests and benchmarks on machines without the real weights: load it with
    ``InceptionV3Features(weights_path=path, expected_sha256=None)``. Numbers from it are not FID.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception

    class _Unloaded(fidelity_inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            return None if state_dict is None else super().load_state_dict(state_dict, *args, **kwargs)

    with mock.patch.object(fidelity_inception, "load_state_dict_from_url", return_value=None):
        net = _Unloaded("inception-v3-compat", ["2048"])
    rng = torch.Generator().manual_seed(seed)
    # He init keeps activations O(1) through the 94 convs (PyTorch's default init fades them)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=rng)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5, generator=rng)
            nn.init.zeros_(module.bias)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
