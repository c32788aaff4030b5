"""lit_gen.optim: named parameter groups and MuonWithAdamW (Muon for matrices, AdamW for the rest)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lit_gen.errors import LitGenError
from lit_gen.nets import GPT
from lit_gen.optim import MuonWithAdamW, parameter_groups


def tiny_gpt(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, **kwargs)


def train_step(net: GPT, optimizer: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (4, 8), generator=g)
    loss = nn.functional.cross_entropy(net(x).reshape(-1, 11), x.roll(-1, 1).reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_parameter_groups_name_every_parameter_once():
    net = tiny_gpt(bias=True, tie_weights=False)
    groups = parameter_groups(net)
    assert [g["name"] for g in groups] == ["matrices", "embeddings", "vectors"]
    assert groups[1]["params"] == [net.wte.weight, net.wpe.weight, net.lm_head.weight]
    assert groups[2]["weight_decay"] == 0.0 and "weight_decay" not in groups[0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    # without a parameter_groups method: every tensor of 2 or more dimensions is a matrix
    plain = parameter_groups(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    assert [g["name"] for g in plain] == ["matrices", "vectors"] and len(plain[1]["params"]) == 3


def test_muon_with_adamw_equals_muon_and_adamw_side_by_side():
    net = tiny_gpt()
    reference = copy.deepcopy(net)
    hybrid = MuonWithAdamW(parameter_groups(net), lr=1e-2, muon_lr=2e-2, weight_decay=0.1)
    ref_groups = parameter_groups(reference)
    muon = torch.optim.Muon(ref_groups[:1], lr=2e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(ref_groups[1:], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for seed in range(3):
        train_step(net, hybrid, seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 11, (4, 8), generator=g)
        nn.functional.cross_entropy(reference(x).reshape(-1, 11), x.roll(-1, 1).reshape(-1)).backward()
        muon.step(), adamw.step()
        muon.zero_grad(), adamw.zero_grad()
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
    assert hybrid.param_groups[0]["lr"] == 2e-2 and hybrid.param_groups[1]["lr"] == 1e-2


def test_a_scheduler_drives_both_parts_also_after_loading_a_state():
    net = tiny_gpt()
    optimizer = MuonWithAdamW(parameter_groups(net), lr=1e-2, muon_lr=2e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    train_step(net, optimizer, 0)
    scheduler.step()
    parts = [g for part in optimizer._parts for g in part.param_groups]
    assert sorted(g["lr"] for g in parts) == [
        5e-3,
        5e-3,
        1e-2,
    ]  # adamw 1e-2 * 0.5 (2 groups), muon 2e-2 * 0.5
    state = copy.deepcopy(optimizer.state_dict())

    resumed_net = copy.deepcopy(net)
    resumed = MuonWithAdamW(parameter_groups(resumed_net), lr=1e-2, muon_lr=2e-2)
    resumed_scheduler = torch.optim.lr_scheduler.LambdaLR(resumed, lambda step: 0.5**step)
    resumed.load_state_dict(state)  # Lightning's order: build both, then restore the optimizer, the scheduler
    resumed_scheduler.load_state_dict(scheduler.state_dict())
    for seed in (1, 2):
        train_step(net, optimizer, seed), scheduler.step()
        train_step(resumed_net, resumed, seed), resumed_scheduler.step()
    for p, q in zip(net.parameters(), resumed_net.parameters()):
        assert torch.equal(p, q)
    assert [g["lr"] for g in resumed.param_groups] == [g["lr"] for g in optimizer.param_groups]
    assert all(
        any(g is h for part in resumed._parts for h in part.param_groups) for g in resumed.param_groups
    )


def test_muon_with_adamw_rejects_a_state_of_another_split_and_non_matrices():
    net = tiny_gpt()
    with pytest.raises(ValueError, match="different optimizer"):
        MuonWithAdamW(parameter_groups(net)).load_state_dict(torch.optim.AdamW(net.parameters()).state_dict())
    with pytest.raises(LitGenError, match="'matrices' group may hold 2-D parameters only"):
        MuonWithAdamW([{"params": [net.ln_f.weight], "name": "matrices"}])
