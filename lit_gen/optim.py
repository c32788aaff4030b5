"""Optimizers that torch has only in parts: Muon for hidden weight matrices together with AdamW for the rest.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers") orthogonalises each matrix's momentum with a
Newton-Schulz iteration; it is meant for the 2-D weights inside the network, while embeddings, the output head
and gains/biases keep AdamW. ``torch.optim.Muon`` implements the first part and refuses anything else, so
``MuonWithAdamW`` is one ``Optimizer`` (one LR scheduler, one checkpoint entry, Lightning's automatic
optimization and gradient clipping) that hands the parameter groups *named* ``"matrices"`` to
``torch.optim.Muon`` and all others to ``torch.optim.AdamW``. The two share the group dicts, so a scheduler that
sets ``group["lr"]`` drives both.

``parameter_groups`` names the groups: a network may say which of its parameters are ``matrices`` (hidden
layers), ``embeddings`` (input embeddings and the output head) and ``vectors`` (biases and norm gains, no weight
decay) by a ``parameter_groups()`` method (``lit_gen.nets.GPT`` does); otherwise every 2-D-or-more tensor counts
as a matrix and the rest as vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lit_gen.errors import LitGenError

#: names of the parameter groups ``parameter_groups`` returns, in this order (empty groups are left out)
GROUP_NAMES = ("matrices", "embeddings", "vectors")


def parameter_groups(network: nn.Module) -> list[dict[str, Any]]:
    """Named parameter groups of ``network``: ``matrices`` and ``embeddings`` (weight decay from the optimizer)
    and ``vectors`` (``weight_decay: 0``); each trainable parameter appears once."""
    named = network.parameter_groups() if hasattr(network, "parameter_groups") else None
    if named is None:
        params = [p for p in network.parameters() if p.requires_grad]
        named = {
            "matrices": [p for p in params if p.dim() >= 2],
            "vectors": [p for p in params if p.dim() < 2],
        }
    groups = []
    for name in GROUP_NAMES:
        params = [p for p in named.get(name, []) if p.requires_grad]
        if params:
            groups.append(
                {"params": params, "name": name, **({"weight_decay": 0.0} if name == "vectors" else {})}
            )
    return groups


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` for the groups named ``"matrices"``, ``torch.optim.AdamW`` for all other groups.

    Args:
        params: parameter groups (dicts with ``name``; see ``parameter_groups``) or plain parameters (all AdamW).
        lr / betas / eps / weight_decay: AdamW's settings (weight decay also applies to the Muon groups, unless a
            group sets its own).
        muon_lr: the Muon groups' learning rate (default: ``lr``). With ``adjust_lr_fn="match_rms_adamw"`` (the
            default here) Muon's update is scaled to AdamW's typical RMS, so the same range of ``lr`` applies.
        momentum / nesterov / ns_steps / adjust_lr_fn: ``torch.optim.Muon``'s settings.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        muon_lr: float | None = None,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str = "match_rms_adamw",
    ) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        muon_groups = [g for g in self.param_groups if g.get("name") == "matrices"]
        adamw_groups = [g for g in self.param_groups if g.get("name") != "matrices"]
        for group in muon_groups:
            if any(p.dim() != 2 for p in group["params"]):
                raise LitGenError("MuonWithAdamW: the 'matrices' group may hold 2-D parameters only")
            if muon_lr is not None:
                group["lr"] = muon_lr
        self._parts: list[torch.optim.Optimizer] = []
        if muon_groups:
            self._parts.append(
                torch.optim.Muon(
                    muon_groups,
                    lr=muon_lr if muon_lr is not None else lr,
                    weight_decay=weight_decay,
                    momentum=momentum,
                    nesterov=nesterov,
                    ns_steps=ns_steps,
                    adjust_lr_fn=adjust_lr_fn,
                )
            )
        if adamw_groups:
            self._parts.append(
                torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self._parts:
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self._parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        parts = state_dict.get("parts")
        if parts is None or len(parts) != len(self._parts):
            raise ValueError("MuonWithAdamW: the state was saved by a different optimizer or parameter split")
        is_muon = [group.get("name") == "matrices" for group in self.param_groups]
        for part, state in zip(self._parts, parts):
            part.load_state_dict(state)
        # loading gives the parts new group dicts: share them again, in the original order
        loaded: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for part in self._parts:
            loaded[isinstance(part, torch.optim.Muon)].extend(part.param_groups)
        self.param_groups = [loaded[muon].pop(0) for muon in is_muon]
