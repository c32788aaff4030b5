"""The diffusion family under DDP for real: 2 CPU processes (gloo) through ``python -m lit_gen fit --trainer.strategy
ddp``, checked as ``test_ddp.py`` checks the other families.

- EDM, a class-conditional TimeMLP on the ring with label dropout and EMA: each rank draws its rows of the global
  batch's noise levels, Gaussian noise and label-dropout draws (recorded by ``helpers.callbacks.RecordsTrainingNoise``),
  so the two ranks draw different noise, together exactly one process's draws with the whole batch; the DDP
  parameters (EMA included) equal that process's to float tolerance and the logged loss is the global batch's.
- Flow matching with minibatch OT (``FlowMatching(ot=True)``): each rank couples its own rows only, so DDP with
  ranks of batch ``b`` is OT-CFM with minibatches of ``b``, not of ``2 b``: the run equals one process with the
  whole batch coupled in the ranks' two shards (``helpers.diffusion.RankShardedOT``), not one coupling it whole.
- DDPM (VP) with a tiny class-conditional U-Net with dropout on 8 px digits, Adam, a warm-up schedule and EMA:
  the ranks draw their own dropout masks (different global RNG states) and a DDP run resumed from its halfway
  checkpoint ends bitwise equal to the uninterrupted one.

SGD in the comparisons with one process, as in ``test_ddp.py`` (Adam's first steps hide gradient errors).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from helpers.ddp import (
    COMMON,
    assert_ran,
    assert_resumed_bitwise,
    assert_same_parameters,
    ddp_and_single_runs,
    logged,
)

from lit_gen.diffusion import ot_coupling
from lit_gen.models.diffusion import NoiseStream

RECORDS = "  callbacks: [{class_path: helpers.callbacks.RecordsTrainingNoise}]\n"

#: 4 batches of 16 points, 8 per rank
EDM = (
    COMMON.format(max_steps=4)
    + RECORDS
    + """model:
  class_path: lit_gen.models.Diffusion
  init_args:
    net:
      class_path: lit_gen.nets.TimeMLP
      init_args: {hidden: [16, 16], time_dim: 8, embedding: fourier, num_classes: 8}
    path: lit_gen.diffusion.EDM
    label_dropout: 0.25
    ema_decay: 0.9
    optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}
data:
  class_path: lit_gen.data.Ring
  init_args: {num_train: 256, num_val: 16, batch_size: 16}
"""
)

#: the same, unconditional, on the straight path with minibatch OT
FLOW_OT = EDM.replace(", num_classes: 8", "").replace(
    "path: lit_gen.diffusion.EDM\n    label_dropout: 0.25",
    "path: {class_path: lit_gen.diffusion.FlowMatching, init_args: {ot: true}}",
)
#: one process coupling the global batch as the two ranks do
FLOW_OT_SHARDED = FLOW_OT.replace(
    "{class_path: lit_gen.diffusion.FlowMatching, init_args: {ot: true}}",
    "{class_path: helpers.diffusion.RankShardedOT, init_args: {shards: 2}}",
)

#: resumed from step 2 of 4; 16 digits a batch, 8 per rank
UNET = (
    COMMON.format(max_steps=4)
    + """model:
  class_path: lit_gen.models.Diffusion
  init_args:
    net:
      class_path: lit_gen.nets.UNet
      init_args:
        in_channels: 1
        image_size: 8
        channels: 8
        channel_mult: [1, 2]
        num_res_blocks: 1
        attention_resolutions: [4]
        dropout: 0.2
        num_classes: 10
    path: {class_path: lit_gen.diffusion.VP, init_args: {num_timesteps: 100}}
    sampler: {class_path: lit_gen.diffusion.DDIM, init_args: {steps: 4, num_timesteps: 100}}
    ema_decay: 0.9
    optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.001}}
    lr_scheduler:
      class_path: torch.optim.lr_scheduler.LinearLR
      init_args: {start_factor: 0.1, total_iters: 4}
data:
  class_path: lit_gen.data.Digits
  init_args: {image_size: 8, batch_size: 16}
"""
)

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The three DDP runs (side by side), the EDM and OT runs' single-process runs, the U-Net run resumed."""
    return ddp_and_single_runs(
        tmp_path_factory.mktemp("ddp_diffusion"),
        {"edm": EDM, "flow_ot": FLOW_OT, "unet": UNET},
        {"edm": EDM, "flow_ot": FLOW_OT_SHARDED},
        {"unet": 2},
    )


def records(root: Path) -> list[dict]:
    """What each rank (or the one process) below ``root`` drew (``RecordsTrainingNoise``), by rank."""
    (run_dir,) = {path.parent for path in root.glob("*/*/noise-rank*.pt")}
    paths = sorted(run_dir.glob("noise-rank*.pt"))
    return [torch.load(path, weights_only=True) for path in paths]


def interleaved(shares: list[torch.Tensor]) -> torch.Tensor:
    """The global batch whose rows ``r, r + n, ...`` are rank ``r``'s share (``ResumableSampler``'s sharding)."""
    whole = torch.empty((sum(len(s) for s in shares), *shares[0].shape[1:]), dtype=shares[0].dtype)
    for rank, share in enumerate(shares):
        whole[rank :: len(shares)] = share
    return whole


def test_edm_ddp_ranks_draw_their_rows_of_the_global_noise_and_match_one_process(ddp_runs):
    root, result = ddp_runs["edm"]
    assert_ran(result)
    ddp = assert_same_parameters(root, atol=1e-6)
    assert int(ddp["state_dict"]["batches_seen"]) == 4 and int(ddp["state_dict"]["net_ema.n_averaged"]) == 4
    (single,), ranks = records(root / "single"), records(root / "ddp")
    assert len(ranks) == 2
    for stream in NoiseStream:  # noise level, Gaussian noise, label dropout
        assert len(single["streams"][stream]) == 4, stream.name
        for batch, whole in enumerate(single["streams"][stream]):
            shares = [rank["streams"][stream][batch] for rank in ranks]
            assert len(shares[0]) == len(shares[1]) == 8
            assert not torch.equal(shares[0], shares[1]), (stream.name, batch)
            assert torch.equal(interleaved(shares), whole), (stream.name, batch)
    # the logged loss is the global batch's (the mean of the ranks'), as the GAN's
    single_loss, ddp_loss = logged(root / "single", "train/loss"), logged(root / "ddp", "train/loss")
    assert len(single_loss) == len(ddp_loss) == 4
    torch.testing.assert_close(torch.tensor(ddp_loss), torch.tensor(single_loss), atol=1e-6, rtol=1e-5)


def test_flow_matching_ot_under_ddp_couples_each_ranks_rows_only(ddp_runs):
    root, result = ddp_runs["flow_ot"]
    assert_ran(result)
    # equal to one process with the whole batch coupled in the ranks' shards
    assert_same_parameters(root, atol=1e-6)
    ranks = records(root / "ddp")
    couplings_differ = 0
    for batch in range(4):
        data, noise, coupled = zip(*(rank["couplings"][batch] for rank in ranks))
        for rank in range(2):
            # a permutation of the rank's own noise rows, no worse paired than the draw's order
            matches = torch.cdist(coupled[rank], noise[rank]) == 0
            assert (matches.sum(0) == 1).all() and (matches.sum(1) == 1).all(), (batch, rank)
            assert ((coupled[rank] - data[rank]) ** 2).sum() <= ((noise[rank] - data[rank]) ** 2).sum()
        # what does not hold: the coupling of the global batch as a whole (one process with ot: true)
        whole_data, whole_noise = interleaved(list(data)), interleaved(list(noise))
        couplings_differ += not torch.equal(ot_coupling(whole_noise, whole_data), interleaved(list(coupled)))
    assert couplings_differ > 0


def test_unet_ddp_ranks_draw_their_own_dropout_and_resume_bitwise(ddp_runs):
    assert_ran(ddp_runs["unet"][1])
    whole = assert_resumed_bitwise(ddp_runs, "unet", 4)
    assert int(whole["state_dict"]["net_ema.n_averaged"]) == 4
    # seed_everything seeds both ranks alike: the same global torch stream would give both the same masks
    first, second = (states["torch"] for states in whole["rng_states"])
    assert not torch.equal(first, second)
