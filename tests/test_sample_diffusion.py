"""``sample``'s diffusion options: ``--sampler`` (a class of lit_gen.diffusion by short name or class path, with its
own options), ``--steps``, ``--guidance`` and ``--labels``; one-line errors for bad values and for options a
checkpoint's model does not take."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.configs import TINY_TOY_GAN, write_config
from helpers.runners import fit_in
from helpers.runs import run_dirs

# a class-conditional flow-matching U-Net on 8 px digits, two training batches
TINY_DIFFUSION = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: lit_gen.models.Diffusion
  init_args:
    net:
      class_path: lit_gen.nets.UNet
      init_args: {in_channels: 1, image_size: 8, channels: 8, channel_mult: [1, 2], num_res_blocks: 1,
                  attention_resolutions: [], num_classes: 10}
    path: lit_gen.diffusion.FlowMatching
    sampler: {class_path: lit_gen.diffusion.FlowEuler, init_args: {steps: 3}}
    ema_decay: 0.9
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 16}
"""


@pytest.fixture(scope="module")
def diffusion_ckpt(tmp_path_factory) -> Path:
    return (
        fit_in(tmp_path_factory.mktemp("diffusion_run"), "tiny", TINY_DIFFUSION) / "checkpoints" / "last.ckpt"
    )


def samples_of(out_dir: Path) -> torch.Tensor:
    return torch.load(out_dir / "samples.pt", weights_only=True)


def test_sample_with_the_models_own_sampler_and_with_another(cli, diffusion_ckpt, tmp_path):
    code, out, err = cli(
        "sample", "--ckpt_path", diffusion_ckpt, "--num_samples", 4, "--out_dir", tmp_path / "a"
    )
    assert code == 0, err
    default = samples_of(tmp_path / "a")
    assert default.shape == (4, 1, 8, 8)
    for args in (["--steps", 5], ["--sampler", "FlowHeun"], ["--sampler", "lit_gen.diffusion.EDMHeun"]):
        code, _, err = cli(
            "sample", "--ckpt_path", diffusion_ckpt, "--num_samples", 4, "--out_dir", tmp_path / "b", *args
        )
        assert code == 0, (args, err)
        assert not torch.equal(samples_of(tmp_path / "b"), default), args
    # the sampler's own options, and --steps on top of them
    for args in (["--sampler", "FlowHeun", "--sampler.steps", 4], ["--sampler", "FlowHeun", "--steps", 4]):
        code, _, err = cli(
            "sample",
            "--ckpt_path",
            diffusion_ckpt,
            "--num_samples",
            4,
            "--out_dir",
            tmp_path / args[-2],
            *args,
        )
        assert code == 0, err
    assert torch.equal(samples_of(tmp_path / "--sampler.steps"), samples_of(tmp_path / "--steps"))


def test_labels_and_guidance(cli, diffusion_ckpt, tmp_path):
    def sample(name: str, *args) -> torch.Tensor:
        code, _, err = cli(
            "sample", "--ckpt_path", diffusion_ckpt, "--num_samples", 6, "--out_dir", tmp_path / name, *args
        )
        assert code == 0, err
        return samples_of(tmp_path / name)

    threes = sample("threes", "--labels", "3")
    assert not torch.equal(threes, sample("sevens", "--labels", "7"))
    # a list is cycled over the samples: 3, 7, 3, 7, ... in one call is 3s and 7s in turn
    mixed = sample("mixed", "--labels", "3,7")
    torch.testing.assert_close(mixed[0::2], threes[0::2])
    # guidance 0 is the unconditional model, whatever the labels
    assert torch.equal(
        sample("u3", "--labels", "3", "--guidance", 0), sample("u7", "--labels", "7", "--guidance", 0)
    )


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "10"], "labels: expected classes in 0..9, got [10]"),
        (["--labels", "3,x"], "labels: expected a class or a comma-separated list of classes"),
        (["--guidance", "-1"], "guidance must be >= 0, got -1.0"),
        (["--steps", "0"], "steps must be a positive integer, got 0"),
        (["--sampler", "DDPM", "--steps", "5"], "steps: the DDPM sampler has no number of steps to set"),
        (["--sampler", "NoSuchSampler"], "sampler"),
    ],
)
def test_bad_values_are_one_line_errors(cli, diffusion_ckpt, tmp_path, args, message):
    code, _, err = cli("sample", "--ckpt_path", diffusion_ckpt, "--out_dir", tmp_path / "x", *args)
    assert message in one_line_error(code, err)
    assert not (tmp_path / "x").exists()


def test_diffusion_options_for_another_family_are_one_line_errors(cli, tmp_path):
    write_config(tmp_path / "toy.yaml", TINY_TOY_GAN)
    code, _, err = cli("fit", "--config", tmp_path / "toy.yaml")
    assert code == 0, err
    ckpt = run_dirs()[0] / "checkpoints" / "last.ckpt"
    for option, value in (("--steps", "5"), ("--labels", "1"), ("--guidance", "2"), ("--sampler", "DDIM")):
        code, _, err = cli("sample", "--ckpt_path", ckpt, option, value)
        line = one_line_error(code, err)
        assert line.endswith(
            f"{option[2:]}: only for diffusion / flow-matching models; this checkpoint holds a GAN"
        )
