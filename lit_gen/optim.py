"""Optimizers and learning-rate schedules.

- ``MuonWithAdamW`` and ``parameter_groups``: Muon for hidden weight matrices together with AdamW for the rest.
- ``WarmupCosineLR`` (nanoGPT's, stepped per optimizer step) and ``BurdaLR`` (Burda et al.'s, stepped per
  epoch): schedules a config injects as ``model.init_args.lr_scheduler``.
- ``make_optimizer``: the optimizer a config injected; a setting it rejects is a one-line error naming the key.

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

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from lit_gen.errors import LitGenError


def make_optimizer(factory, params, key: str) -> torch.optim.Optimizer:
    """``factory(params)``, the optimizer a config injected; a setting it rejects (torch's optimizers raise
    ``ValueError`` for a negative learning rate, betas outside [0, 1), ...) becomes a one-line ``LitGenError``
    naming the config key ``key``."""
    try:
        return factory(params)
    except ValueError as err:
        raise LitGenError(f"{key}: {err}") from None


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


# --- learning-rate schedules ----------------------------------------------------------------------------------


class WarmupCosineLR(LRScheduler):
    """Linear warm-up then cosine decay to ``min_lr``, held after ``decay_steps`` (nanoGPT's ``get_lr``).

    At step ``t`` (optimizer steps): ``lr * (t + 1) / (warmup_steps + 1)`` while ``t < warmup_steps``; then
    ``min_lr + 0.5 * (1 + cos(pi * r)) * (lr - min_lr)`` with ``r = (t - warmup) / (decay_steps - warmup)``;
    ``min_lr`` after ``decay_steps``. Step it once per optimizer step (the model does: ``interval: step``).

    Args:
        warmup_steps: steps of linear warm-up.
        decay_steps: the step at which the cosine reaches ``min_lr`` (usually ``trainer.max_steps``).
        min_lr: the final learning rate (absolute, for every parameter group).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, min_lr: float = 0.0
    ) -> None:
        if warmup_steps < 0 or decay_steps <= warmup_steps:
            raise LitGenError(
                f"model.lr_scheduler: need 0 <= warmup_steps < decay_steps, got {warmup_steps}, {decay_steps}"
            )
        self.warmup_steps, self.decay_steps, self.min_lr = warmup_steps, decay_steps, min_lr
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, step: int) -> float:
        if step < self.warmup_steps:
            return base_lr * (step + 1) / (self.warmup_steps + 1)
        if step > self.decay_steps:
            return self.min_lr
        ratio = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (base_lr - self.min_lr)

    def get_lr(self) -> list[float]:
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]


class BurdaLR(LRScheduler):
    """Burda et al. (2015): stage i = 0 .. num_stages - 1 lasts growth^i epochs at lr0 * decay^i
    (lr0 = 1e-3, decay = 10^(-1/7), growth 3: sum_i 3^i = 3,280 epochs for 8 stages). Step it once per
    epoch (Lightning's default ``interval: epoch``); after the last stage the last rate is kept.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        num_stages: int = 8,
        growth: int = 3,
        decay: float = 10.0 ** (-1.0 / 7.0),
        last_epoch: int = -1,
    ) -> None:
        self.num_stages, self.growth, self.decay = num_stages, growth, decay
        super().__init__(optimizer, last_epoch)

    def stage(self, epoch: int) -> int:
        """The stage an epoch (0-based) belongs to."""
        end = 0
        for i in range(self.num_stages):
            end += self.growth**i
            if epoch < end:
                return i
        return self.num_stages - 1

    @property
    def total_epochs(self) -> int:
        return sum(self.growth**i for i in range(self.num_stages))

    def get_lr(self) -> list[float]:
        factor = self.decay ** self.stage(max(self.last_epoch, 0))
        return [base * factor for base in self.base_lrs]
