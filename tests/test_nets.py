"""Networks: shapes at the supported resolutions, output ranges, normalisation and spectral-norm options."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn.utils import parametrize

from lit_gen.errors import LitGenError
from lit_gen.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
    TimeMLP,
)


@pytest.mark.parametrize("image_size", [8, 14, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(image_size, channels):
    generator = DCGANGenerator(latent_dim=5, channels=channels, image_size=image_size, width=4)
    discriminator = DCGANDiscriminator(channels=channels, image_size=image_size, width=4)
    images = generator(torch.randn(3, 5))
    assert images.shape == (3, channels, image_size, image_size)
    assert images.min() >= -1.0 and images.max() <= 1.0  # tanh
    assert discriminator(images).shape == (3,)


@pytest.mark.parametrize("image_size", [0, 4, 7, 16 + 1, 30, 48])
def test_dcgan_rejects_unsupported_sizes_naming_image_size(image_size):
    with pytest.raises(LitGenError, match=rf"^image_size: .*got {image_size}$"):
        DCGANGenerator(image_size=image_size)
    with pytest.raises(LitGenError, match="image_size"):
        DCGANDiscriminator(image_size=image_size)


def test_dcgan_initialisation_follows_the_paper():
    generator = DCGANGenerator(latent_dim=64, channels=3, image_size=32, width=32)
    convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().abs() < 0.002 and weights.std().item() == pytest.approx(0.02, rel=0.05)
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert torch.cat([m.weight for m in norms]).detach().std().item() == pytest.approx(0.02, rel=0.3)


@pytest.mark.parametrize(
    ("norm", "layer"), [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("none", None)]
)
def test_dcgan_discriminator_normalisation(norm, layer):
    discriminator = DCGANDiscriminator(channels=1, image_size=32, width=4, norm=norm)
    kinds = {type(m) for m in discriminator.modules()}
    for candidate in (nn.BatchNorm2d, nn.GroupNorm):
        assert (candidate in kinds) == (candidate is layer)
    # per-sample critic (needed by WGAN-GP): without batch norm a sample's logit ignores the rest of the batch
    if norm != "batch":
        x = torch.randn(4, 1, 32, 32)
        assert torch.allclose(discriminator(x)[:1], discriminator(x[:1]), atol=1e-6)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_resnet_initialisation_is_xavier_uniform_as_in_sngan(spectral_norm):
    """Gain sqrt(2) in the residual branches (conv1, conv2), 1 in shortcuts and the first / last layers: the
    weights are uniform on +-gain sqrt(6 / (fan_in + fan_out)), so their std is gain sqrt(2 / (fan_in + fan_out))."""
    torch.manual_seed(0)
    nets = [ResNetGenerator(width=64), ResNetDiscriminator(width=64, spectral_norm=spectral_norm)]
    layers = [
        (name, m) for net in nets for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    assert len(layers) == 11 + 11
    for name, m in layers:
        weight = m.parametrizations.weight.original if parametrize.is_parametrized(m) else m.weight
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        gain = 2**0.5 if name.endswith(("conv1", "conv2")) else 1.0
        bound = gain * (6.0 / (fan_in + fan_out)) ** 0.5
        assert weight.abs().max() <= bound, name
        assert weight.std().item() == pytest.approx(
            bound / 3**0.5, rel=0.1 if weight.numel() > 500 else 0.5
        ), name


def test_resnet_gan_shapes():
    generator = ResNetGenerator(latent_dim=16, channels=3, width=8)
    images = generator(torch.randn(2, 16))
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1.0
    assert ResNetDiscriminator(channels=3, width=8)(images).shape == (2,)


def test_mlp_gan_shapes_and_paper_defaults():
    generator, discriminator = MLPGenerator(), MLPDiscriminator()
    assert generator(torch.randn(5, 2)).shape == (5, 2)
    assert discriminator(torch.randn(5, 2)).shape == (5,)
    # PacGAN toy nets: G 4 x 400 ReLU, D 3 x 200
    assert [m.out_features for m in generator.modules() if isinstance(m, nn.Linear)] == [400] * 4 + [2]
    assert [m.out_features for m in discriminator.modules() if isinstance(m, nn.Linear)] == [200] * 3 + [1]
    assert MLPDiscriminator(data_dim=8, hidden=[4])(torch.randn(3, 8)).shape == (3,)  # packed input


def test_nets_are_plain_modules():
    for net in (
        DCGANGenerator(image_size=8, width=2),
        MLPGenerator(hidden=[2]),
        ResNetDiscriminator(width=4),
    ):
        assert isinstance(net, nn.Module) and not isinstance(net, LightningModule)


def _spectral_norms(module: nn.Module) -> list[float]:
    """Largest singular value of each spectrally normalised layer's weight (reshaped to out x rest)."""
    norms = []
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            weight = m.weight.detach()
            norms.append(torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2).item())
    return norms


@pytest.mark.parametrize(
    ("make", "shape", "layers"),
    [
        (
            lambda sn: DCGANDiscriminator(channels=3, image_size=32, width=4, spectral_norm=sn),
            (2, 3, 32, 32),
            4,
        ),
        (lambda sn: ResNetDiscriminator(channels=3, width=4, spectral_norm=sn), (2, 3, 32, 32), 11),
        (lambda sn: MLPDiscriminator(data_dim=2, hidden=[16, 16], spectral_norm=sn), (2, 2), 3),
    ],
)
def test_spectral_norm_option(make, shape, layers):
    torch.manual_seed(0)
    assert _spectral_norms(make(False)) == []
    discriminator = make(True)
    assert len(_spectral_norms(discriminator)) == layers  # every conv / linear layer
    # from the start: DCGAN's initialisation re-attaches spectral norm to the re-initialised weights
    assert _spectral_norms(discriminator) == pytest.approx([1.0] * layers, abs=0.08)  # was up to 1.5
    for _ in range(30):  # one power iteration per training forward
        discriminator(torch.randn(shape))
    assert _spectral_norms(discriminator) == pytest.approx([1.0] * layers, abs=0.01)


@pytest.mark.parametrize("time_input", ["concat", "every_layer"])
def test_time_mlp_conditions_on_time_and_class_either_way(time_input):
    torch.manual_seed(0)
    net = TimeMLP(data_dim=2, hidden=[16, 16], time_dim=8, num_classes=3, time_input=time_input)
    x, t = torch.randn(5, 2), torch.rand(5)
    out = net(x, t, labels=torch.tensor([0, 1, 2, 3, 0]))
    assert out.shape == (5, 2)
    assert not torch.allclose(net(x, t), net(x, t + 0.5))  # time enters
    assert not torch.allclose(
        net(x, t, labels=torch.zeros(5, dtype=torch.long)), net(x, t)
    )  # so does the class


def test_time_mlp_every_layer_adds_the_time_to_each_hidden_layer_and_concat_keeps_its_keys():
    every = TimeMLP(hidden=[16, 16, 16], time_dim=8, time_input="every_layer")
    assert [layer.in_features for layer in every.time_layers] == [8, 8, 8]
    # checkpoints of the default net load unchanged: its parameter names are those it always had
    concat = TimeMLP(hidden=[16, 16], time_dim=8)
    assert {k.split(".")[0] for k in concat.state_dict()} == {"time", "net"}
    with pytest.raises(ValueError, match="time_input: expected 'concat' or 'every_layer', got 'film'"):
        TimeMLP(time_input="film")
