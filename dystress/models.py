"""Backbones, the projection head, and the two put together.

ResNets are torchvision's (weights=None, fc replaced by Identity) with either the ImageNet stem or the
CIFAR stem of SimCLR [Chen et al., ICML 2020, appendix B.9]: conv1 3x3 stride 1 without bias and no
max-pool. `small_cnn` is a 4-block CNN that trains in minutes on a CPU. The projector is
Linear-BN-ReLU-Linear-BN without biases (docs/STUDY.md section 3).

Against other code: the CIFAR conv1 has padding 1 as in SimCLR and the DySTreSS authors' script
(solo-learn pads by 2, giving 34x34 maps); it is initialised with torchvision's own rule (Kaiming
normal, fan-out), where the authors and solo-learn keep PyTorch's default Conv2d init (about half the
standard deviation); BatchNorm follows it directly, so the difference barely matters.
"""

from __future__ import annotations

import torch
from torch import nn

from dystress import cpu_kernels
from dystress._checks import as_int

#: Names accepted by `build_backbone`.
BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "small_cnn")
#: Stems accepted by `build_backbone` (small_cnn has only "cifar").
STEMS: tuple[str, ...] = ("cifar", "imagenet")

_FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "small_cnn": 256}


class SmallCNN(nn.Module):
    """Four conv3x3-BN-ReLU blocks of 32/64/128/256 channels, 2x2 max-pool after the first three, global
    average pool: images [B, 3, H, W] -> features [B, 256]. About 0.39M parameters, 15 MFLOP-MACs at 32x32.

    The max-pool runs before its block's ReLU: ReLU is monotone, so max(relu(x)) = relu(max(x)) and the
    outputs and gradients are those of conv-BN-ReLU-pool bit for bit (tested), with the ReLU on a quarter
    of the values (a quick-profile step 12 % faster on the CPU). Parameter names are unchanged.

    In training, BN-pool-ReLU of a pooled block runs as one fused CPU kernel where it applies
    (:mod:`dystress.cpu_kernels`: bf16 channels-last activations on a CPU with AVX-512 BF16), the
    same function rounded once instead of between the ops; elsewhere, and in eval mode, the modules.
    """

    feature_dim = 256

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            if i < len(widths) - 1:  # pooled before the ReLU: the same values, a quarter of the ReLU's work
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.ReLU(inplace=True))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self.features)
        i = 0
        while i < len(layers):
            if _bn_pool_relu_at(layers, i) and cpu_kernels.applies(x, layers[i]):
                x = cpu_kernels.batch_norm_pool_relu(x, layers[i])  # BN, pool and ReLU at once
                i += 3
            else:
                x = layers[i](x)
                i += 1
        return self.pool(x).flatten(1)


def _bn_pool_relu_at(layers: list[nn.Module], i: int) -> bool:
    """Whether layers i, i+1, i+2 are a BatchNorm2d, a 2x2 stride-2 max-pool and a ReLU."""
    if i + 2 >= len(layers) or not isinstance(layers[i], nn.BatchNorm2d):
        return False
    pool, relu = layers[i + 1], layers[i + 2]
    return (
        isinstance(pool, nn.MaxPool2d)
        and pool.kernel_size in (2, (2, 2))
        and pool.stride in (2, (2, 2))
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
        and not pool.ceil_mode
        and not pool.return_indices
        and isinstance(relu, nn.ReLU)
    )


def build_backbone(name: str, stem: str = "cifar") -> nn.Module:
    """A randomly initialised backbone mapping images [B, 3, H, W] to features [B, feature_dim].

    name: one of BACKBONES (feature_dim 512 / 512 / 2048 / 256); stem: "cifar" (3x3 stride-1 conv1, no
    max-pool: 32x32 inputs keep a 4x4 map before the pool) or "imagenet" (torchvision's 7x7 stride-2 conv1
    and max-pool). The returned module has an int attribute `feature_dim`.
    """
    if name not in BACKBONES:
        raise ValueError(f"name must be one of {BACKBONES}, got {name!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if name == "small_cnn":
        if stem != "cifar":
            raise ValueError(f"stem must be 'cifar' for small_cnn, got {stem!r}")
        return SmallCNN()
    import torchvision.models  # imported here: `import dystress` for a loss need not load torchvision

    model = getattr(torchvision.models, name)(weights=None)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.feature_dim = _FEATURE_DIMS[name]
    return model


class Projector(nn.Module):
    """Projection head h [B, in_dim] -> z [B, out_dim]: Linear(no bias)-BN-ReLU-Linear(no bias)-BN."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        for label, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{label} must be an int >= 1, got {value!r}")
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
            nn.BatchNorm1d(out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ContrastiveModel(nn.Module):
    """Backbone + projector: images [B, 3, H, W] -> (features h [B, feature_dim], projections z [B, out_dim]).

    Neither output is normalised (the losses normalise z, the metrics normalise h).
    """

    def __init__(self, backbone: nn.Module, projector: Projector) -> None:
        super().__init__()
        feature_dim = getattr(backbone, "feature_dim", None)
        if not isinstance(feature_dim, int):
            raise ValueError("backbone must have an int attribute feature_dim (use build_backbone)")
        if getattr(projector, "in_dim", feature_dim) != feature_dim:
            raise ValueError(
                f"projector.in_dim must equal backbone.feature_dim = {feature_dim}, got {projector.in_dim}"
            )
        self.backbone = backbone
        self.projector = projector
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor, views: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [V * B, 3, H, W]; with ``views`` = V > 1, the V equal chunks of x (one view each) go through
        the network one at a time, so that BatchNorm normalises each view over its own batch (as the
        DySTreSS authors' CIFAR script, solo-learn and lightly's CIFAR benchmark do); V = 1: one joint
        pass (SimCLR's concatenated views, the authors' ImageNet code). Returns (h [V * B, feature_dim],
        z [V * B, out_dim]) in the order of x."""
        views = as_int("views", views, minimum=1)
        if views == 1:
            h = self.backbone(x)
            return h, self.projector(h)
        if x.shape[0] % views:
            raise ValueError(f"views must divide the batch ({x.shape[0]}), got {views}")
        outs = [self.forward(chunk) for chunk in x.chunk(views)]
        return torch.cat([h for h, _ in outs]), torch.cat([z for _, z in outs])
