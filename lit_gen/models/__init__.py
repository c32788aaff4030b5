"""One LightningModule per generative family."""

from lit_gen.models.base import GenerativeModule
from lit_gen.models.gan import GAN

__all__ = ["GAN", "GenerativeModule"]
