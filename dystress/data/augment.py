"""SimCLR augmentation as batched tensor ops, with independent random parameters for every sample.

The recipe of SimCLR [Chen et al., ICML 2020, appendix A] as torchvision defines each op:
RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter, p) -> RandomGrayscale -> (optional
GaussianBlur) -> Normalize. Everything runs on the device that holds the uint8 batch, without a Python
loop over samples and without a host sync, so a GPU augments a whole batch in a few kernels.

Differences from torchvision's per-image pipeline, all deliberate:
- all ops work on float32 in [0, 1]; torchvision on PIL / uint8 images rounds to 0..255 between ops;
- resizing is bilinear without antialiasing (`F.grid_sample`). When the crop is not larger than the output
  (always the case for CIFAR crops resized to 32) this equals torchvision's `resized_crop`; when it is larger
  (downscaling), it equals `resized_crop(..., antialias=False)` and may alias.

As in torchvision's ColorJitter, the four jitter ops run in an independent random order per sample
(vectorised as 3 blend stages, one hue stage, 3 blend stages, with identity factors where a sample's op
sits elsewhere: one RGB<->HSV round trip per batch).

The per-sample parameters are drawn on the generator's device; keep the module on the images' device
(`.to(device)`) so its normalisation constants are not copied on every call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from dystress._checks import is_int, is_real, require
from dystress.data.transforms import NORMALIZATION

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)
#: Colour-jitter op codes used in the "order" parameter.
JITTER_OPS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
_CROP_TRIES = 10  # torchvision's RandomResizedCrop makes 10 attempts before its center-crop fallback


def _check_pair(
    name: str, value: Sequence[float], low: float, high: float, low_open: bool
) -> tuple[float, float]:
    ok = isinstance(value, Sequence) and len(value) == 2 and all(is_real(v) for v in value)
    if ok:
        a, b = float(value[0]), float(value[1])
        ok = (a > low if low_open else a >= low) and a <= b <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(
            f"{name} must be a pair (a, b) with {bracket}{low} <= a <= b <= {high}], got {value!r}"
        )
    return a, b


def _check_number(name: str, value: float, low: float, high: float) -> float:
    require(is_real(value) and low <= value <= high, name, f"a number in [{low}, {high}]", value)
    return float(value)


def _check_triple(name: str, value: Sequence[float], positive: bool) -> tuple[float, float, float]:
    ok = isinstance(value, Sequence) and len(value) == 3 and all(is_real(v) for v in value)
    require(ok and not (positive and min(value) <= 0), name, f"3 numbers{' > 0' if positive else ''}", value)
    return (float(value[0]), float(value[1]), float(value[2]))


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of float RGB images [B, 3, H, W] -> [B, 1, H, W] (ITU-R 601-2 weights, as torchvision)."""
    r, g, b = x.unbind(dim=1)
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).unsqueeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of float RGB images [B, 3, H, W] in [0, 1] by shift [B] (in turns, |shift| <= 0.5).

    torchvision's definition (RGB -> HSV, h <- (h + shift) mod 1, HSV -> RGB), written in closed form:
    with chroma c = max - min and the hue in sixths h6, channel n of the result is
    max - c * clamp(min(k, 4 - k), 0, 1) with k = (n + h6) mod 6 and n = 5, 3, 1 for R, G, B.
    """
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h6 = torch.where(
        maxc == r, (g - b) / safe, torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    h6 = h6 + 6.0 * shift.view(-1, 1, 1)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        channels.append(maxc - chroma * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur float images [B, C, H, W] with a per-sample Gaussian of std sigma [B] (pixels).

    Separable, reflect padding, kernel weights exp(-t^2 / (2 sigma^2)) on t = -(K-1)/2..(K-1)/2 normalised
    to sum 1 (torchvision's gaussian_blur); two depthwise convolutions with one kernel per sample.
    """
    bsz, ch, height, width = x.shape
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - (kernel_size - 1) / 2
    kernel = torch.softmax(-(t[None, :] ** 2) / (2.0 * sigma[:, None].to(x.dtype) ** 2), dim=1)  # [B, K]
    kernel = kernel.repeat_interleave(ch, dim=0)  # [B*C, K]
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, bsz * ch, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel.view(bsz * ch, 1, kernel_size, 1), groups=bsz * ch)
    y = F.conv2d(y, kernel.view(bsz * ch, 1, 1, kernel_size), groups=bsz * ch)
    return y.view(bsz, ch, height, width)


class SimCLRAugmentation(nn.Module):
    """Per-sample random SimCLR views of a uint8 batch [B, 3, H, W] -> normalised float32 [B, 3, S, S].

    Parameters follow torchvision: crop area fraction ~ U(crop_scale), log aspect ratio ~
    U(log crop_ratio) (10 tries, then a center crop), flip with flip_prob, ColorJitter(brightness,
    contrast, saturation, hue) with jitter_prob (factors ~ U[max(0, 1 - b), 1 + b], hue ~ U[-hue, hue]),
    grayscale with grayscale_prob, Gaussian blur with blur_prob (sigma ~ U(blur_sigma), kernel
    `blur_kernel_size`, default the odd number nearest above 10% of image_size, at least 3), then
    (x - mean) / std. Defaults: the CIFAR recipe of docs/STUDY.md section 3.

    `sample_parameters` draws every random number of a batch (one `torch.rand` call) and `apply`
    applies them, so the same generator state always gives the same views.
    """

    def __init__(
        self,
        image_size: int = 32,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        mean: tuple[float, float, float] = NORMALIZATION["cifar10"][0],
        std: tuple[float, float, float] = NORMALIZATION["cifar10"][1],
    ) -> None:
        super().__init__()
        require(is_int(image_size) and image_size >= 1, "image_size", "an int >= 1", image_size)
        self.image_size = image_size = int(image_size)
        self.crop_scale = _check_pair("crop_scale", crop_scale, 0.0, 1.0, low_open=True)
        self.crop_ratio = _check_pair("crop_ratio", crop_ratio, 0.0, math.inf, low_open=True)
        self.flip_prob = _check_number("flip_prob", flip_prob, 0.0, 1.0)
        self.brightness = _check_number("brightness", brightness, 0.0, math.inf)
        self.contrast = _check_number("contrast", contrast, 0.0, math.inf)
        self.saturation = _check_number("saturation", saturation, 0.0, math.inf)
        self.hue = _check_number("hue", hue, 0.0, 0.5)
        self.jitter_prob = _check_number("jitter_prob", jitter_prob, 0.0, 1.0)
        self.grayscale_prob = _check_number("grayscale_prob", grayscale_prob, 0.0, 1.0)
        self.blur_prob = _check_number("blur_prob", blur_prob, 0.0, 1.0)
        self.blur_sigma = _check_pair("blur_sigma", blur_sigma, 0.0, math.inf, low_open=True)
        if blur_kernel_size is None:
            blur_kernel_size = max(3, int(0.1 * image_size) // 2 * 2 + 1)
        odd = is_int(blur_kernel_size) and blur_kernel_size >= 1 and blur_kernel_size % 2 == 1
        require(odd, "blur_kernel_size", "None or an odd int >= 1", blur_kernel_size)
        if blur_kernel_size // 2 >= image_size:
            raise ValueError(f"blur_kernel_size must be < 2 * image_size + 1, got {blur_kernel_size}")
        self.blur_kernel_size = int(blur_kernel_size)
        self.mean_values = _check_triple("mean", mean, positive=False)
        self.std_values = _check_triple("std", std, positive=True)
        self.register_buffer("_mean", torch.tensor(self.mean_values).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std_values).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, crop_scale={self.crop_scale}, crop_ratio={self.crop_ratio}, "
            f"flip_prob={self.flip_prob}, jitter=({self.brightness}, {self.contrast}, {self.saturation}, "
            f"{self.hue}) p={self.jitter_prob}, grayscale_prob={self.grayscale_prob}, "
            f"blur_prob={self.blur_prob}, blur_sigma={self.blur_sigma}"
        )

    @torch.no_grad()
    def sample_parameters(
        self,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw the random parameters of `batch_size` samples of `height` x `width` input images.

        Drawn on the generator's device (or `device` when no generator is given), returned on `device`
        (default: where they were drawn). Keys, all [B] unless noted:
        top, left, crop_height, crop_width (int64 pixels of the crop box); scale, log_ratio (float32, the
        accepted try, or those of the fallback crop); fallback (bool: no try fitted, center crop);
        flip (bool); jitter (bool: colour jitter applied); brightness, contrast, saturation, hue (float32
        factors, drawn for every sample, used only where jitter); order (int64 [B, 4], a permutation of
        0..3 = JITTER_OPS, the order of the jitter ops); grayscale (bool); blur (bool); sigma (float32).
        """
        require(is_int(batch_size) and batch_size >= 1, "batch_size", "an int >= 1", batch_size)
        require(is_int(height) and height >= 1, "height", "an int >= 1", height)
        require(is_int(width) and width >= 1, "width", "an int >= 1", width)
        draw_device = generator.device if generator is not None else torch.device(device or "cpu")
        t = _CROP_TRIES
        u = torch.rand(batch_size, 2 * t + 15, generator=generator, device=draw_device)
        if device is not None:  # asynchronous only towards a GPU: a GPU -> CPU copy must land before use
            u = u.to(device, non_blocking=torch.device(device).type == "cuda")
        u_area, u_logr = u[:, :t], u[:, t : 2 * t]
        (u_top, u_left, u_flip, u_jitter, u_gray, u_blur, u_sigma) = u[:, 2 * t : 2 * t + 7].unbind(dim=1)
        u_factors, u_order = u[:, 2 * t + 7 : 2 * t + 11], u[:, 2 * t + 11 : 2 * t + 15]

        params = self._sample_crop(u_area, u_logr, u_top, u_left, height, width)
        params["flip"] = u_flip < self.flip_prob
        params["jitter"] = u_jitter < self.jitter_prob
        for j, (name, strength) in enumerate(
            (("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation))
        ):
            low = max(0.0, 1.0 - strength)
            params[name] = low + (1.0 + strength - low) * u_factors[:, j]
        params["hue"] = self.hue * (2.0 * u_factors[:, 3] - 1.0)
        params["order"] = u_order.argsort(dim=1)
        params["grayscale"] = u_gray < self.grayscale_prob
        params["blur"] = u_blur < self.blur_prob
        params["sigma"] = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u_sigma
        return params

    def _sample_crop(
        self,
        u_area: torch.Tensor,
        u_logr: torch.Tensor,
        u_top: torch.Tensor,
        u_left: torch.Tensor,
        height: int,
        width: int,
    ) -> dict[str, torch.Tensor]:
        """torchvision's RandomResizedCrop.get_params, all tries of all samples at once."""
        area = float(height * width)
        scale = self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * u_area  # [B, T]
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        log_ratio = log_lo + (log_hi - log_lo) * u_logr
        ratio = torch.exp(log_ratio)
        w = torch.round(torch.sqrt(area * scale * ratio)).long()
        h = torch.round(torch.sqrt(area * scale / ratio)).long()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
        ok = fits.any(dim=1)
        # the fallback of torchvision: the largest center crop with the ratio clamped to crop_ratio
        in_ratio = width / height
        if in_ratio < self.crop_ratio[0]:
            fw, fh = width, int(round(width / self.crop_ratio[0]))
        elif in_ratio > self.crop_ratio[1]:
            fh, fw = height, int(round(height * self.crop_ratio[1]))
        else:
            fw, fh = width, height
        ch = torch.where(ok, h.gather(1, first).squeeze(1), fh)
        cw = torch.where(ok, w.gather(1, first).squeeze(1), fw)
        top_range, left_range = height - ch + 1, width - cw + 1
        top = torch.minimum((u_top * top_range).long(), top_range - 1)
        left = torch.minimum((u_left * left_range).long(), left_range - 1)
        return {
            "top": torch.where(ok, top, (height - fh) // 2),
            "left": torch.where(ok, left, (width - fw) // 2),
            "crop_height": ch,
            "crop_width": cw,
            "scale": torch.where(ok, scale.gather(1, first).squeeze(1), fh * fw / area),
            "log_ratio": torch.where(ok, log_ratio.gather(1, first).squeeze(1), math.log(fw / fh)),
            "fallback": ~ok,
        }

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply drawn parameters (`sample_parameters`): uint8 [B, 3, H, W] -> float32 [B, 3, S, S]."""
        self._check_images(images)
        x = self._resized_crop_flip(images, params)
        x = self._color_jitter(x, params)
        if self.grayscale_prob > 0:
            x = torch.where(params["grayscale"].view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
        if self.blur_prob > 0:
            blurred = gaussian_blur(x, params["sigma"], self.blur_kernel_size)
            x = torch.where(params["blur"].view(-1, 1, 1, 1), blurred, x)
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def _resized_crop_flip(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Crop box -> image_size^2 by bilinear sampling (crop-relative, edges clamped), flip folded in."""
        bsz, _, height, width = images.shape
        size = self.image_size
        pos = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size  # [S]

        def coords(start: torch.Tensor, extent: torch.Tensor, full: int) -> torch.Tensor:
            start, extent = start.float()[:, None], extent.float()[:, None]
            c = torch.minimum(torch.maximum(start + pos * extent - 0.5, start), start + extent - 1)
            return (2.0 * c + 1.0) / full - 1.0  # grid_sample's normalised coordinates (align_corners=False)

        gy = coords(params["top"], params["crop_height"], height)  # [B, S]
        gx = coords(params["left"], params["crop_width"], width)
        gx = torch.where(params["flip"][:, None], gx.flip(1), gx)
        grid = torch.stack(
            (gx[:, None, :].expand(bsz, size, size), gy[:, :, None].expand(bsz, size, size)), dim=-1
        )
        x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return x / 255.0

    def _color_jitter(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Brightness, contrast, saturation, hue in each sample's own order, vectorised.

        Brightness, contrast and saturation are torchvision's blends clamp(ref + f (x - ref), 0, 1) with
        ref = 0, the image's mean luma and the luma image. Every sample runs its three blends in its own
        order with the hue shift at its own place among them, as 3 blend stages before one hue stage and 3
        after: blend j of a sample runs in the first group when it precedes the hue and in the second
        otherwise; elsewhere it gets the factor 1, the identity.
        """
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        if self.jitter_prob == 0 or max(strengths) == 0:
            return x
        on = params["jitter"]
        stage_of = params["order"].argsort(dim=1)  # [B, 4]: the stage at which op k runs
        blend_seq = stage_of[:, :3].argsort(dim=1)  # [B, 3]: the blend ops in the order they run
        hue_stage = stage_of[:, 3:]  # [B, 1]: blend j runs before the hue iff j < hue_stage
        factors = torch.stack([params[name] for name in JITTER_OPS[:3]], dim=1).gather(1, blend_seq)
        before = torch.arange(3, device=x.device)[None, :] < hue_stage
        groups = (before, ~before) if self.hue > 0 else (torch.ones_like(before),)  # no hue: one group
        for g, group_mask in enumerate(groups):
            active = group_mask & on[:, None]
            for j in range(3):
                x = self._blend(x, blend_seq[:, j], torch.where(active[:, j], factors[:, j], 1.0))
            if g == 0 and self.hue > 0:
                x = torch.where(on.view(-1, 1, 1, 1), adjust_hue(x, params["hue"]), x)
        return x

    @staticmethod
    def _blend(x: torch.Tensor, op: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """clamp(ref + factor (x - ref), 0, 1) per sample; op [B] in 0..2 picks ref (brightness: 0,
        contrast: mean luma, saturation: luma), factor [B] (1 is the identity)."""
        gray = rgb_to_grayscale(x)
        op = op.view(-1, 1, 1, 1)
        ref = torch.where(op == 2, gray, torch.where(op == 1, gray.mean(dim=(2, 3), keepdim=True), 0.0))
        return torch.lerp(ref.expand_as(x), x, factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)

    def _check_images(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        if images.shape[0] < 1:
            raise ValueError("images must hold at least one image")

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view of each image: uint8 [B, 3, H, W] -> normalised float32 [B, 3, S, S]."""
        self._check_images(images)
        bsz, _, height, width = images.shape
        params = self.sample_parameters(bsz, height, width, generator=generator, device=images.device)
        return self.apply(images, params)

    def two_views(
        self, images: torch.Tensor, generator: torch.Generator | None = None, one_pass: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views (v0, v1) of each image, each float32 [B, 3, S, S].

        one_pass (default: on CUDA): one pass over the batch taken twice ([2B]: every first view, then
        every second), so each op launches once per step rather than once per view (a GPU step is
        bound by launches; on the CPU two passes of [B] are faster, their data staying in cache). Its
        parameters are one draw of [2B] rows where two passes draw [B] and [B]: a generator that
        streams its numbers in order (the CPU's) gives the same views bit for bit; CUDA's Philox lays a
        larger draw out differently, so there they are other random views of the same distribution.
        """
        if one_pass is None:
            one_pass = images.device.type == "cuda"
        if one_pass:
            v0, v1 = self(torch.cat([images, images]), generator).chunk(2)
            return v0, v1
        return self(images, generator), self(images, generator)


def augmentation_grid(
    images: torch.Tensor,
    n_pairs: int = 8,
    generator: torch.Generator | None = None,
    augmentation: SimCLRAugmentation | None = None,
) -> Figure:
    """A figure with one row per image: the original and two augmented views (un-normalised).

    images: uint8 [B, 3, H, W] (the first n_pairs are shown); augmentation: default SimCLRAugmentation().
    """
    from matplotlib.figure import Figure

    require(
        is_int(n_pairs) and 1 <= n_pairs <= images.shape[0],
        "n_pairs",
        f"an int in [1, {images.shape[0]}]",
        n_pairs,
    )
    aug = augmentation if augmentation is not None else SimCLRAugmentation()
    batch = images[:n_pairs]
    views = aug.two_views(batch, generator)
    fig = Figure(figsize=(3 * 1.4, n_pairs * 1.4), layout="constrained")
    axes = fig.subplots(n_pairs, 3, squeeze=False)
    for i in range(n_pairs):
        shown = [batch[i].permute(1, 2, 0).cpu().numpy()]
        for v in views:
            x = (v[i : i + 1] * aug._std.to(v.device) + aug._mean.to(v.device)).clamp(0, 1)
            shown.append(x[0].permute(1, 2, 0).cpu().numpy())
        for j, img in enumerate(shown):
            axes[i, j].imshow(img, interpolation="nearest")  # the pixels as they are: no smoothing
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(("original", "view 1", "view 2")[j], fontsize=8)
    return fig
