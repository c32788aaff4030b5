"""lit_gen: GANs, VAEs and GPT-style generators as Lightning modules, driven by one YAML config."""

__version__ = "0.1.0"
