"""Test-time transforms: center_crop against torchvision's CenterCrop, normalize against its formula."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dystress.data.transforms import center_crop, normalize


@pytest.mark.parametrize(("height", "width"), [(8, 8), (9, 8), (8, 11), (13, 10), (256, 256), (256, 341)])
@pytest.mark.parametrize("size", [1, 3, 4, 7, 8])
def test_center_crop_matches_torchvision(height: int, width: int, size: int) -> None:
    g = torch.Generator().manual_seed(height * 100 + width)
    images = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=g)
    out = center_crop(images, size)
    assert out.shape == (2, 3, size, size)
    torch.testing.assert_close(out, TF.center_crop(images, [size, size]), rtol=0, atol=0)


def test_center_crop_none_is_identity_and_sizes_are_checked() -> None:
    images = torch.zeros(1, 3, 6, 9, dtype=torch.uint8)
    assert center_crop(images, None) is images
    for bad in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match=r"size must be None or an int in \[1, 6\]"):
            center_crop(images, bad)
    with pytest.raises(ValueError, match="images must have shape"):
        center_crop(images[0], 3)


def test_normalize_is_the_affine_map() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    expected = torch.tensor([(0.0 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, (1.0 - 0.0) / 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(images, mean, std), expected)
