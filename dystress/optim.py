"""Optimisers and the learning-rate schedule of pretraining.

:func:`build_optimizer` gives SGD (the authors' CIFAR script) or :class:`LARS` (SimCLR, the ImageNet
recipe); :func:`lr_at` is the per-step schedule: a linear warm-up, then a cosine decay to 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dystress.config import PretrainConfig

__all__ = ["LARS", "build_optimizer", "lr_at", "set_lr"]


class LARS(torch.optim.Optimizer):
    """LARS in the form of You et al. 2017: SGD with a layer-wise trust ratio.

    For a parameter w with gradient g and weight decay wd, ``d = g + wd w`` is scaled by the trust
    ratio ``eta ||w|| / (||g|| + wd ||w||)`` (1 when either norm is 0), then heavy-ball momentum
    ``buf = momentum buf + d`` and ``w -= lr buf``. Parameter groups with ``lars_exclude=True`` (biases
    and normalisation parameters, see :func:`build_optimizer`) get neither adaptation nor weight decay.
    SimCLR's variant differs slightly (trust ratio eta ||w|| / ||g + wd w||, and momentum accumulated
    after the learning rate); the two agree while the learning rate is constant.
    """

    def __init__(
        self, params: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    wd = group["weight_decay"]
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["eta"] * w_norm / (g_norm + wd * w_norm),
                        torch.ones_like(w_norm),
                    )
                    d = d.add(p, alpha=wd).mul_(trust)
                if group["momentum"] > 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module, config: PretrainConfig, loss: nn.Module | None = None
) -> torch.optim.Optimizer:
    """SGD (nesterov off; weight decay on every parameter, as in the authors' CIFAR script) or LARS
    (biases and normalisation parameters, i.e. tensors with ndim <= 1, excluded from adaptation and
    weight decay, as in SimCLR / solo-learn).

    The ``loss``'s parameters (a :class:`~dystress.temperature.LearnedTemperature`) form a group of their
    own: learning rate ``config.temperature_lr`` (default ``lr``; each group's ``lr_scale`` is its ratio
    to ``lr``, which the schedule keeps), no weight decay, no LARS adaptation, and the temperature is
    clamped back into its range after every step (``clamp_``), as CLIP's training code does.
    """
    if config.optimizer == "sgd":
        groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    else:
        adapted = [p for p in model.parameters() if p.ndim > 1]
        excluded = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": adapted}, {"params": excluded, "lars_exclude": True, "weight_decay": 0.0}]
    learned = [] if loss is None else [p for p in loss.parameters() if p.requires_grad]
    if learned:
        scale = (config.temperature_lr or config.lr) / config.lr
        groups.append({"params": learned, "weight_decay": 0.0, "lars_exclude": True, "lr_scale": scale})
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = LARS(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            eta=config.lars_eta,
        )
    clamps = [m.clamp_ for m in ([] if loss is None else loss.modules()) if hasattr(m, "clamp_")]
    if clamps:
        optimizer.register_step_post_hook(lambda *_: [clamp() for clamp in clamps])
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale`` (1 when it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``base_lr`` over
    ``warmup_steps`` (step s gets base_lr (s + 1) / warmup_steps), then cosine decay to 0 at
    ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))
