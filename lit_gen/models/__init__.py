"""One LightningModule per generative family."""

from lit_gen.models.autoregressive import Autoregressive
from lit_gen.models.base import GenerativeModule
from lit_gen.models.diffusion import Diffusion
from lit_gen.models.gan import GAN
from lit_gen.models.vae import VAE
from lit_gen.models.vqvae import VQVAE

__all__ = ["Autoregressive", "Diffusion", "GAN", "GenerativeModule", "VAE", "VQVAE"]
