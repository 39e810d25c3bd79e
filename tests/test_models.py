from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dystress.models import BACKBONES, ContrastiveModel, Projector, SmallCNN, build_backbone

# torchvision's published parameter count of resnet18 (ImageNet head: fc 512 x 1000 + 1000 bias)
RESNET18_TORCHVISION = 11_689_512


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnet18_cifar():
    torch.manual_seed(0)
    return build_backbone("resnet18", "cifar")


@pytest.fixture(scope="module")
def resnet18_imagenet():
    return build_backbone("resnet18", "imagenet")


def test_resnet18_parameter_counts(resnet18_cifar, resnet18_imagenet):
    imagenet = resnet18_imagenet
    assert _count(imagenet) == RESNET18_TORCHVISION - (512 * 1000 + 1000)  # fc removed
    assert _count(resnet18_cifar) == _count(imagenet) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3 == 11_168_832


def test_stems_differ(resnet18_cifar, resnet18_imagenet):
    imagenet = resnet18_imagenet
    c1 = resnet18_cifar.conv1
    assert (c1.kernel_size, c1.stride, c1.padding, c1.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(resnet18_cifar.maxpool, nn.Identity) and isinstance(resnet18_cifar.fc, nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    # spatial size before the pool: CIFAR stem keeps 32 / 8 = 4, ImageNet stem reduces to 1
    x = torch.randn(1, 3, 32, 32)
    maps = {}
    for name, m in (("cifar", resnet18_cifar), ("imagenet", imagenet)):
        m.avgpool.register_forward_hook(lambda mod, inp, out, name=name: maps.__setitem__(name, inp[0].shape))
        with torch.no_grad():
            m.eval()(x)
    assert maps == {"cifar": (1, 512, 4, 4), "imagenet": (1, 512, 1, 1)}


@pytest.mark.parametrize(
    ("name", "stem", "dim", "size"),
    [
        ("resnet18", "cifar", 512, 16),
        ("resnet34", "cifar", 512, 8),
        ("resnet50", "cifar", 2048, 8),
        ("resnet50", "imagenet", 2048, 32),
        ("small_cnn", "cifar", 256, 32),
        ("small_cnn", "cifar", 256, 24),
    ],
)
def test_feature_shapes(name, stem, dim, size):
    model = build_backbone(name, stem).eval()
    assert model.feature_dim == dim
    with torch.no_grad():
        h = model(torch.randn(2, 3, size, size))
    assert h.shape == (2, dim) and torch.isfinite(h).all()


def test_small_cnn_architecture():
    model = SmallCNN()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    expected = sum(9 * i * o + 2 * o for i, o in ((3, 32), (32, 64), (64, 128), (128, 256)))  # conv + BN
    assert _count(model) == expected


def _relu_then_pool(model: SmallCNN, x: torch.Tensor) -> torch.Tensor:
    """The textbook order conv-BN-ReLU-(pool) with ``model``'s own modules (the reference)."""
    mods = list(model.features)
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    for i in convs:
        x = torch.relu(mods[i + 1](mods[i](x)))
        if i + 2 < len(mods) and isinstance(mods[i + 2], nn.MaxPool2d):
            x = mods[i + 2](x)
    return model.pool(x).flatten(1)


@pytest.mark.parametrize("bf16", [False, True])
def test_small_cnn_pool_before_relu_is_bit_identical(bf16, monkeypatch):
    """Pooling before the ReLU gives the textbook order's features and gradients exactly (ReLU is
    monotone), in train mode, with ties (bf16 rounding, zeros) included (the modules' path: the fused
    CPU kernel, which rounds once, has tests/test_cpu_kernels.py)."""
    from dystress import cpu_kernels

    monkeypatch.setattr(cpu_kernels, "applies", lambda x, bn: False)
    torch.manual_seed(0)
    model = SmallCNN().to(memory_format=torch.channels_last).train()
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    x[:8] = x[:8].round()  # plateaus: many equal values inside the pooling windows
    weights = torch.randn(64, 256)
    results = []
    for forward in (model, lambda v: _relu_then_pool(model, v)):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = forward(x)
        (h.float() * weights).sum().backward()
        results.append((h.detach(), [p.grad.clone() for p in model.parameters()]))
    (h_model, g_model), (h_ref, g_ref) = results
    assert torch.equal(h_model, h_ref)
    assert all(torch.equal(a, b) for a, b in zip(g_model, g_ref, strict=True))
    kinds = [type(m).__name__ for m in model.features[:4]]
    assert kinds == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"]


@pytest.mark.parametrize(("in_dim", "hidden", "out"), [(512, 512, 128), (2048, 2048, 128), (256, 64, 16)])
def test_projector_layers_and_shape(in_dim, hidden, out):
    proj = Projector(in_dim, hidden, out)
    kinds = [type(m) for m in proj.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert proj.net[0].bias is None and proj.net[3].bias is None
    assert _count(proj) == in_dim * hidden + 2 * hidden + hidden * out + 2 * out
    z = proj(torch.randn(8, in_dim))
    assert z.shape == (8, out)
    # train-mode BN output: zero mean, unit (biased) variance per dimension
    torch.testing.assert_close(z.mean(0), torch.zeros(out), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(out), atol=1e-3, rtol=0)


def test_projector_matches_manual_eval_computation():
    torch.manual_seed(1)
    proj = Projector(6, 5, 3)
    for bn in (proj.net[1], proj.net[4]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    proj.eval()
    h = torch.randn(4, 6, dtype=torch.float64)
    p = proj.double()

    def bn(x, m):
        return (x - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    a = bn(h @ p.net[0].weight.T, p.net[1]).clamp(min=0)
    expected = bn(a @ p.net[3].weight.T, p.net[4])
    torch.testing.assert_close(p(h), expected)


def test_contrastive_model_and_eval_determinism():
    torch.manual_seed(0)
    model = ContrastiveModel(build_backbone("small_cnn"), Projector(256, 128, 32))
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    h1, z1 = model(x)
    h2, z2 = model(x)
    assert h1.shape == (4, 256) and z1.shape == (4, 32) and model.feature_dim == 256
    assert torch.equal(h1, h2) and torch.equal(z1, z2)
    torch.testing.assert_close(z1, model.projector(model.backbone(x)))
    assert z1.norm(dim=1).sub(1).abs().max() > 1e-3  # not normalised
    h0, _ = model(x[:1])  # eval mode: a sample's features do not depend on the batch
    torch.testing.assert_close(h0, h1[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("views", [2, 3])
def test_separate_views_use_per_view_batchnorm_statistics(views):
    """views = V: each of the V chunks goes through the network alone (train-mode BatchNorm normalises
    it over its own batch and updates the running statistics once per view), exactly like V calls."""
    import copy

    torch.manual_seed(0)
    model = ContrastiveModel(build_backbone("small_cnn"), Projector(256, 64, 16)).train()
    reference, joint = copy.deepcopy(model), copy.deepcopy(model)
    x = torch.randn(views * 6, 3, 32, 32) + torch.arange(views * 6).view(-1, 1, 1, 1) % 3
    h, z = model(x, views=views)
    outs = [reference(chunk) for chunk in x.chunk(views)]
    torch.testing.assert_close(h, torch.cat([o[0] for o in outs]))
    torch.testing.assert_close(z, torch.cat([o[1] for o in outs]))
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)  # running means/vars and batch counters
    assert model.projector.net[1].num_batches_tracked.item() == views
    _, z_joint = joint(x)  # one pass: statistics over all views at once
    assert (z_joint - z).abs().max() > 1e-2
    with pytest.raises(ValueError, match=r"views must divide the batch \(7\), got 2"):
        model(torch.randn(7, 3, 32, 32), views=2)
    for bad, message in ((0, "views must be >= 1, got 0"), (1.0, "views must be an integer, got 1.0")):
        with pytest.raises(ValueError, match=message):
            model(x, views=bad)
    _, z_np = model(x, views=np.int64(views))  # a NumPy integer counts (the package's scalar rule)
    assert z_np.shape == z.shape


def test_contrastive_model_rejects_mismatch():
    with pytest.raises(ValueError, match="in_dim"):
        ContrastiveModel(build_backbone("small_cnn"), Projector(512))
    with pytest.raises(ValueError, match="feature_dim"):
        ContrastiveModel(nn.Linear(3, 3), Projector(3))


def test_channels_last_gives_same_output(resnet18_cifar):
    model = resnet18_cifar.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)
        out = cl(x.contiguous(memory_format=torch.channels_last))
    model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "vit"}, "name"),
        ({"name": "resnet18", "stem": "x"}, "stem"),
        ({"name": "small_cnn", "stem": "imagenet"}, "stem"),
    ],
)
def test_build_backbone_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_projector_rejects(bad):
    with pytest.raises(ValueError, match="hidden_dim"):
        Projector(8, bad)


def test_backbone_names():
    assert BACKBONES == ("resnet18", "resnet34", "resnet50", "small_cnn")
