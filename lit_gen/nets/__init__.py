"""Plain ``nn.Module`` networks (no Lightning inside); families compose them."""

from lit_gen.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from lit_gen.nets.mlp import MLPDiscriminator, MLPGenerator
from lit_gen.nets.resnet import ResNetDiscriminator, ResNetGenerator
from lit_gen.nets.time_mlp import TimeMLP
from lit_gen.nets.transformer import GPT
from lit_gen.nets.unet import UNet
from lit_gen.nets.vae import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from lit_gen.nets.vqvae import VectorQuantizer, VQDecoder, VQEncoder

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GPT",
    "MLPDecoder",
    "MLPEncoder",
    "MLPDiscriminator",
    "MLPGenerator",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "TimeMLP",
    "UNet",
    "VQDecoder",
    "VQEncoder",
    "VectorQuantizer",
]
