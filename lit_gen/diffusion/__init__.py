"""Diffusion and flow-matching building blocks (framework-free): Gaussian paths, samplers, classifier-free guidance
and the probability-flow ODE likelihood."""

from lit_gen.diffusion.guidance import GuidedDenoiser, drop_labels, guide
from lit_gen.diffusion.likelihood import bits_per_dim, dequantize, ode_log_likelihood
from lit_gen.diffusion.paths import (
    EDM,
    VP,
    FlowMatching,
    GaussianPath,
    alphas_cumprod,
    beta_schedule,
    ot_coupling,
)
from lit_gen.diffusion.samplers import DDIM, DDPM, EDMHeun, FlowEuler, FlowHeun, Sampler

__all__ = [
    "DDIM",
    "DDPM",
    "EDM",
    "EDMHeun",
    "FlowEuler",
    "FlowHeun",
    "FlowMatching",
    "GaussianPath",
    "GuidedDenoiser",
    "Sampler",
    "VP",
    "alphas_cumprod",
    "beta_schedule",
    "bits_per_dim",
    "dequantize",
    "drop_labels",
    "guide",
    "ode_log_likelihood",
    "ot_coupling",
]
