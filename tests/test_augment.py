from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from scipy import stats
from torchvision.transforms import RandomResizedCrop

from dystress.data.augment import (
    JITTER_OPS as JITTER_NAMES,
)
from dystress.data.augment import (
    SimCLRAugmentation,
    adjust_hue,
    augmentation_grid,
    gaussian_blur,
)
from dystress.data.transforms import normalize

N_PARAMS = 20000  # samples for the distribution tests (parameters only: cheap)


def _images(b, h=32, w=32, seed=0):
    return torch.randint(
        0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _params(
    b,
    top,
    left,
    ch,
    cw,
    flip=False,
    jitter=False,
    factors=(1.0, 1.0, 1.0, 0.0),
    order=(0, 1, 2, 3),
    gray=False,
    blur=False,
    sigma=1.0,
):
    """Explicit parameters for `apply`: every value given for the whole batch (or per sample as a list)."""

    def col(v, dtype):
        t = torch.as_tensor(v, dtype=dtype)
        return t.expand(b).clone() if t.ndim == 0 else t

    order_t = torch.as_tensor(order, dtype=torch.int64)
    return {
        "top": col(top, torch.int64),
        "left": col(left, torch.int64),
        "crop_height": col(ch, torch.int64),
        "crop_width": col(cw, torch.int64),
        "flip": col(flip, torch.bool),
        "jitter": col(jitter, torch.bool),
        "brightness": col(factors[0], torch.float32),
        "contrast": col(factors[1], torch.float32),
        "saturation": col(factors[2], torch.float32),
        "hue": col(factors[3], torch.float32),
        "order": order_t.expand(b, 4).clone() if order_t.ndim == 1 else order_t,
        "grayscale": col(gray, torch.bool),
        "blur": col(blur, torch.bool),
        "sigma": col(sigma, torch.float32),
    }


def _plain(**kwargs):
    """An augmentation whose output is in [0, 1] (mean 0, std 1), so it compares with torchvision directly."""
    return SimCLRAugmentation(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs)


# ----------------------------------------------------------------------------------- validation, basics


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 32.0}, "image_size"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
        ({"crop_ratio": (0.0, 1.0)}, "crop_ratio"),
        ({"crop_ratio": (2.0, 1.0)}, "crop_ratio"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"brightness": -0.1}, "brightness"),
        ({"contrast": -1}, "contrast"),
        ({"saturation": "0.4"}, "saturation"),
        ({"hue": 0.6}, "hue"),
        ({"jitter_prob": -0.1}, "jitter_prob"),
        ({"grayscale_prob": 2}, "grayscale_prob"),
        ({"blur_prob": -1}, "blur_prob"),
        ({"blur_sigma": (0.0, 1.0)}, "blur_sigma"),
        ({"blur_kernel_size": 4}, "blur_kernel_size"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
    ],
)
def test_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SimCLRAugmentation(**kwargs)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 3, 8, 8),
        torch.zeros(2, 1, 8, 8, dtype=torch.uint8),
        torch.zeros(3, 8, 8, dtype=torch.uint8),
    ],
)
def test_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="images"):
        SimCLRAugmentation()(bad)


def test_identity_recipe_is_normalisation():
    x = _images(5)
    aug = SimCLRAugmentation(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (5, 3, 32, 32)
    torch.testing.assert_close(out, normalize(x, aug.mean_values, aug.std_values), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "size"), [(32, 32, 32), (40, 24, 16), (20, 20, 48)])
def test_output_shape_and_range(h, w, size):
    aug = _plain(image_size=size)
    out = aug(_images(6, h, w), torch.Generator().manual_seed(1))
    assert out.shape == (6, 3, size, size) and out.min() >= 0 and out.max() <= 1


def test_reproducible_with_generator():
    x = _images(16)
    aug = SimCLRAugmentation(blur_prob=0.5)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    v0, v1 = aug.two_views(x, torch.Generator().manual_seed(7))
    assert torch.equal(v0, a) and not torch.allclose(v0, v1)
    w0, w1 = aug.two_views(x, torch.Generator().manual_seed(7))
    assert torch.equal(v0, w0) and torch.equal(v1, w1)


def test_two_views_in_one_pass_equal_two_calls_bit_for_bit_on_the_cpu():
    """The one-pass two_views (CUDA's default) against the definition, two calls of forward in a row,
    with every op on (blur, grayscale, jitter in random orders) and a fallback crop: each sample's
    result does not depend on the rest of the batch."""
    x = _images(64, 24, 40)
    aug = SimCLRAugmentation(image_size=32, blur_prob=0.5, grayscale_prob=0.5, crop_ratio=(0.9, 1.1))
    g = torch.Generator().manual_seed(11)
    expected = (aug(x, g), aug(x, g))
    v0, v1 = aug.two_views(x, torch.Generator().manual_seed(11), one_pass=True)
    assert torch.equal(v0, expected[0]) and torch.equal(v1, expected[1])


def test_identical_images_get_independent_views():
    x = _images(1).expand(64, -1, -1, -1).contiguous()
    aug = SimCLRAugmentation()
    g = torch.Generator().manual_seed(3)
    params = aug.sample_parameters(64, 32, 32, generator=g)
    out = aug.apply(x, params).flatten(1)
    dist = torch.cdist(out, out)
    assert (dist + torch.eye(64) * 1e9).min() > 1e-3  # 64 pairwise-different views
    boxes = torch.stack([params[k] for k in ("top", "left", "crop_height", "crop_width")], dim=1)
    assert len(boxes.unique(dim=0)) >= 60
    assert 10 < int(params["flip"].sum()) < 54
    assert params["brightness"].unique().numel() == 64 and params["hue"].unique().numel() == 64


# --------------------------------------------------------------------------------- parameter statistics


def _sample(aug, h=32, w=32, seed=0, n=N_PARAMS):
    return aug.sample_parameters(n, h, w, generator=torch.Generator().manual_seed(seed))


def _ks_uniform(values, low, high):
    return stats.kstest(values.double().numpy(), stats.uniform(loc=low, scale=high - low).cdf).pvalue


@pytest.mark.parametrize(
    ("scale", "ratio"), [((0.08, 1.0), (1.0, 1.0)), ((0.08, 0.5), (3 / 4, 4 / 3)), ((0.1, 0.4), (0.5, 2.0))]
)
def test_crop_scale_and_log_ratio_uniform_when_every_try_fits(scale, ratio):
    """On 32x32 these recipes never reject a try, so the accepted values are the raw draws."""
    p = _sample(SimCLRAugmentation(crop_scale=scale, crop_ratio=ratio))
    assert not p["fallback"].any()
    assert _ks_uniform(p["scale"], *scale) > 1e-3
    if ratio[0] < ratio[1]:
        assert _ks_uniform(p["log_ratio"], math.log(ratio[0]), math.log(ratio[1])) > 1e-3
    area = 32 * 32 * p["scale"].double()
    r = p["log_ratio"].double().exp()
    assert torch.equal(p["crop_width"], torch.round(torch.sqrt(area * r)).long())
    assert torch.equal(p["crop_height"], torch.round(torch.sqrt(area / r)).long())


@pytest.mark.parametrize(("h", "w"), [(32, 32), (24, 40)])
def test_crop_boxes_match_torchvision_distribution(h, w):
    """Default recipe (some tries rejected): two-sample KS against torchvision's own get_params."""
    p = _sample(SimCLRAugmentation(), h, w)
    torch.manual_seed(0)
    img = torch.empty(3, h, w)
    ref = np.array([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)])
    ours = torch.stack([p["top"], p["left"], p["crop_height"], p["crop_width"]], 1).numpy()
    for k in range(4):
        assert stats.ks_2samp(ours[:, k], ref[:, k]).pvalue > 1e-3, k
    area = ours[:, 2] * ours[:, 3]
    assert stats.ks_2samp(area, ref[:, 2] * ref[:, 3]).pvalue > 1e-3
    assert (ours[:, 0] + ours[:, 2] <= h).all() and (ours[:, 1] + ours[:, 3] <= w).all() and (ours >= 0).all()


@pytest.mark.parametrize(("h", "w"), [(4, 100), (100, 4), (6, 6)])
def test_crop_fallback_matches_torchvision(h, w):
    """scale (0.9, 1) with ratio (0.2, 0.25) never fits these shapes: torchvision's center-crop fallback."""
    aug = SimCLRAugmentation(crop_scale=(0.9, 1.0), crop_ratio=(0.2, 0.25))
    p = _sample(aug, h, w, n=50)
    ref = RandomResizedCrop.get_params(torch.empty(3, h, w), [0.9, 1.0], [0.2, 0.25])
    assert p["fallback"].all()
    for k, v in zip(("top", "left", "crop_height", "crop_width"), ref, strict=True):
        assert (p[k] == v).all(), k
    assert torch.allclose(p["scale"], torch.tensor(ref[2] * ref[3] / (h * w)))


def test_crop_offsets_uniform():
    p = _sample(SimCLRAugmentation(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)))
    assert (p["crop_height"] == 16).all() and (p["crop_width"] == 16).all()
    for key in ("top", "left"):
        counts = torch.bincount(p[key], minlength=17).numpy()
        assert len(counts) == 17 and stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize(("key", "prob"), [("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2), ("blur", 0.3)])
def test_application_rates(key, prob):
    p = _sample(SimCLRAugmentation(blur_prob=0.3))
    rate = p[key].double().mean().item()
    assert abs(rate - prob) < 4 * math.sqrt(prob * (1 - prob) / N_PARAMS)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_application_rates_extremes(prob):
    p = _sample(
        SimCLRAugmentation(flip_prob=prob, jitter_prob=prob, grayscale_prob=prob, blur_prob=prob), n=500
    )
    for key in ("flip", "jitter", "grayscale", "blur"):
        assert bool(p[key].all()) == (prob == 1.0) and bool(p[key].any()) == (prob == 1.0)


@pytest.mark.parametrize(("strength", "low", "high"), [(0.4, 0.6, 1.4), (0.8, 0.2, 1.8), (1.5, 0.0, 2.5)])
def test_jitter_factor_ranges(strength, low, high):
    aug = SimCLRAugmentation(
        brightness=strength, contrast=strength, saturation=strength, hue=0.1, blur_sigma=(0.1, 2.0)
    )
    p = _sample(aug)
    for key in ("brightness", "contrast", "saturation"):
        assert p[key].min() >= low and p[key].max() <= high and _ks_uniform(p[key], low, high) > 1e-3
    assert p["hue"].abs().max() <= 0.1 and _ks_uniform(p["hue"], -0.1, 0.1) > 1e-3
    assert _ks_uniform(p["sigma"], 0.1, 2.0) > 1e-3


def test_jitter_orders_uniform_over_permutations():
    order = _sample(SimCLRAugmentation())["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand_as(order))
    perms = {perm: i for i, perm in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([perms[tuple(o)] for o in order.tolist()], minlength=24)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_independent_parameters_are_uncorrelated():
    p = _sample(SimCLRAugmentation())
    cols = [
        p["brightness"],
        p["contrast"],
        p["saturation"],
        p["hue"],
        p["flip"].float(),
        p["scale"],
        p["sigma"],
    ]
    corr = np.corrcoef(torch.stack(cols).double().numpy())
    assert np.abs(corr - np.eye(len(cols))).max() < 4 / math.sqrt(N_PARAMS)


# -------------------------------------------------------------------- each op against torchvision


@pytest.mark.parametrize(
    ("shape", "box", "size", "antialias"),
    [
        ((32, 32), (0, 0, 32, 32), 32, True),  # identity
        ((32, 32), (3, 5, 17, 11), 32, True),  # upscaling: antialias irrelevant
        ((32, 32), (20, 0, 12, 32), 32, True),
        ((40, 24), (7, 2, 30, 21), 32, True),
        ((64, 64), (4, 9, 50, 40), 32, False),  # downscaling: ours = torchvision without antialias
        ((64, 48), (0, 0, 64, 48), 16, False),
    ],
)
@pytest.mark.parametrize("flip", [False, True])
def test_resized_crop_and_flip_match_torchvision(shape, box, size, antialias, flip):
    x = _images(3, *shape)
    out = _plain(image_size=size).apply(x, _params(3, *box, flip=flip))
    ref = TF.resized_crop(x.float() / 255, *box, [size, size], antialias=antialias)
    if flip:
        ref = TF.horizontal_flip(ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    ("op", "factor"),
    [
        ("brightness", 0.6),
        ("brightness", 1.37),
        ("contrast", 0.61),
        ("contrast", 1.4),
        ("saturation", 0.0),
        ("saturation", 1.33),
        ("hue", -0.1),
        ("hue", 0.07),
        ("hue", 0.5),
    ],
)
def test_single_jitter_op_matches_torchvision(op, factor):
    x = _images(4)
    factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0} | {op: factor}
    out = _plain().apply(x, _params(4, 0, 0, 32, 32, jitter=True, factors=tuple(factors.values())))
    ref = getattr(TF, f"adjust_{op}")(x.float() / 255, factor)
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


def test_jitter_in_every_order_matches_torchvision_sequence():
    """All 24 orders in one batch, each with its own factors, against torchvision applied per image."""
    orders = list(itertools.permutations(range(4)))
    b = len(orders)
    g = torch.Generator().manual_seed(5)
    factors = torch.stack(
        [0.6 + 0.8 * torch.rand(b, generator=g) for _ in range(3)] + [0.2 * torch.rand(b, generator=g) - 0.1]
    )
    on = torch.arange(b) % 5 != 0  # a few samples without jitter
    x = _images(b, seed=2)
    params = _params(b, 0, 0, 32, 32, jitter=on, factors=tuple(factors), order=torch.tensor(orders))
    out = _plain().apply(x, params)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(b):
        ref = x[i].float() / 255
        if on[i]:
            for op in orders[i]:
                ref = fns[op](ref, float(factors[op, i]))
        torch.testing.assert_close(out[i], ref, rtol=0, atol=3e-5)


def test_grayscale_and_normalise_match_torchvision():
    x = _images(6)
    gray = torch.tensor([True, False, True, True, False, False])
    aug = SimCLRAugmentation()
    out = aug.apply(x, _params(6, 0, 0, 32, 32, gray=gray))
    ref = x.float() / 255
    ref = torch.where(gray.view(-1, 1, 1, 1), TF.rgb_to_grayscale(ref, num_output_channels=3), ref)
    ref = TF.normalize(ref, list(aug.mean_values), list(aug.std_values))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel_size", [3, 5, 9])
def test_blur_matches_torchvision(kernel_size):
    x = _images(4, 16, 16)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    blur = torch.tensor([True, True, False, True])
    aug = _plain(image_size=16, blur_prob=0.5, blur_kernel_size=kernel_size)
    out = aug.apply(x, _params(4, 0, 0, 16, 16, blur=blur, sigma=sigma))
    for i in range(4):
        ref = x[i].float() / 255
        if blur[i]:
            ref = TF.gaussian_blur(ref, [kernel_size, kernel_size], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=2e-5)


def test_adjust_hue_float64_reference():
    """Closed-form hue rotation vs a brute-force colorsys loop in float64 (the HSV definition)."""
    import colorsys

    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, :, 0, 0] = 0.5  # gray pixel
    x[0, :, 1, 1] = torch.tensor([0.9, 0.9, 0.2], dtype=torch.float64)  # tie between r and g
    shift = torch.tensor([0.23, -0.41], dtype=torch.float64)
    out = adjust_hue(x, shift)
    for b, i, j in itertools.product(range(2), range(4), range(5)):
        h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
        expected = colorsys.hsv_to_rgb((h + float(shift[b])) % 1.0, s, v)
        assert np.allclose(out[b, :, i, j].numpy(), expected, atol=1e-12)


def test_gaussian_blur_preserves_constants_and_mass():
    x = torch.full((2, 3, 9, 9), 0.3)
    out = gaussian_blur(x, torch.tensor([0.5, 2.0]), 5)
    torch.testing.assert_close(out, x)


def test_augmentation_grid_figure():
    fig = augmentation_grid(_images(4), n_pairs=3, generator=torch.Generator().manual_seed(0))
    assert len(fig.axes) == 9 and fig.axes[1].get_title() == "view 1"
    first = fig.axes[0].get_images()[0]
    assert first.get_interpolation() == "nearest"  # 32-px images shown as their pixels, not smoothed
    np.testing.assert_array_equal(first.get_array(), _images(4)[0].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="n_pairs"):
        augmentation_grid(_images(2), n_pairs=3)


@pytest.mark.parametrize(("h", "w", "blur_prob"), [(32, 32, 0.0), (36, 28, 0.5)])
def test_full_pipeline_matches_torchvision_per_image(h, w, blur_prob):
    """Sampled parameters of the default recipe, replayed image by image with torchvision's functions."""
    x = _images(48, h, w, seed=4)
    aug = SimCLRAugmentation(blur_prob=blur_prob, blur_kernel_size=3)
    params = aug.sample_parameters(48, h, w, generator=torch.Generator().manual_seed(11))
    out = aug.apply(x, params)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(48):
        p = {k: v[i] for k, v in params.items()}
        box = [int(p[k]) for k in ("top", "left", "crop_height", "crop_width")]
        ref = TF.resized_crop(x[i].float() / 255, *box, [32, 32], antialias=box[2] <= 32 and box[3] <= 32)
        if p["flip"]:
            ref = TF.horizontal_flip(ref)
        if p["jitter"]:
            for op in p["order"].tolist():
                ref = fns[op](ref, float(p[JITTER_NAMES[op]]))
        if p["grayscale"]:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        if p["blur"]:
            ref = TF.gaussian_blur(ref, [3, 3], [float(p["sigma"])] * 2)
        ref = TF.normalize(ref, list(aug.mean_values), list(aug.std_values))
        torch.testing.assert_close(out[i], ref, rtol=0, atol=2e-4)


def test_jitter_without_hue_keeps_blend_orders():
    """hue=0 takes a shorter path (one group of blend stages): still each sample's own order."""
    orders = torch.tensor(list(itertools.permutations(range(4))))
    x = _images(24, seed=6)
    factors = (torch.full((24,), 0.5), torch.full((24,), 1.4), torch.full((24,), 0.2), torch.zeros(24))
    out = _plain(hue=0.0).apply(x, _params(24, 0, 0, 32, 32, jitter=True, factors=factors, order=orders))
    fns = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation}
    for i in range(24):
        ref = x[i].float() / 255
        for op in orders[i].tolist():
            if op < 3:
                ref = fns[op](ref, float(factors[op][i]))
        torch.testing.assert_close(out[i], ref, rtol=0, atol=2e-5)
