from __future__ import annotations

import pytest
import torch

from dystress.data.loader import DeviceBatchLoader, epoch_permutation


def _data(n=50):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    labels = torch.arange(n) * 10
    return images, labels


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [tuple(t.clone() for t in batch) for batch in loader]


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "sizes"),
    [
        (50, 16, True, [16, 16, 16]),
        (50, 16, False, [16, 16, 16, 2]),
        (48, 16, True, [16] * 3),
        (48, 16, False, [16] * 3),
        (7, 7, True, [7]),
        (7, 1, False, [1] * 7),
        (5, 8, False, [5]),
    ],
)
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_indices_and_match_data(n, batch_size, drop_last, sizes, shuffle):
    images, labels = _data(n)
    loader = DeviceBatchLoader(images, labels, batch_size, shuffle=shuffle, drop_last=drop_last, seed=3)
    batches = _epoch(loader, 0)
    assert len(loader) == len(batches) and [len(b[2]) for b in batches] == sizes
    seen = torch.cat([b[2] for b in batches])
    assert len(seen.unique()) == len(seen) == sum(sizes)  # no index twice
    if not drop_last:
        assert torch.equal(seen.sort().values, torch.arange(n))  # every index once
    if not shuffle:
        assert torch.equal(seen, torch.arange(sum(sizes)))
    for x, y, idx in batches:
        assert x.dtype == torch.uint8 and torch.equal(x, images[idx]) and torch.equal(y, labels[idx])


def test_order_is_a_function_of_seed_and_epoch():
    images, labels = _data(200)
    a = DeviceBatchLoader(images, labels, 32, seed=1)
    b = DeviceBatchLoader(images, labels, 32, seed=1)
    c = DeviceBatchLoader(images, labels, 32, seed=2)
    orders = {}
    for epoch in (0, 1, 2, 5):
        a.set_epoch(epoch)
        orders[epoch] = a.order()
        assert torch.equal(orders[epoch], epoch_permutation(200, 1, epoch))
    b.set_epoch(5)  # "resumed" at epoch 5 without ever running epochs 0-4
    assert torch.equal(b.order(), orders[5])
    assert all(not torch.equal(orders[0], orders[e]) for e in (1, 2, 5))
    assert not torch.equal(c.order(), orders[5]) and not torch.equal(_epoch(c, 0)[0][2], _epoch(a, 0)[0][2])
    assert torch.equal(torch.cat([t[2] for t in _epoch(a, 2)]), orders[2][: 6 * 32])
    assert _epoch(a, 2)[0][2].tolist() == _epoch(a, 2)[0][2].tolist()  # re-iterating repeats the epoch


def test_permutations_look_uniform():
    """Position of each index over 2400 epochs: uniform over 0..n-1 (chi-square on the first position)."""
    from scipy import stats

    firsts = torch.tensor([int(epoch_permutation(12, 0, e)[0]) for e in range(2400)])
    assert stats.chisquare(torch.bincount(firsts, minlength=12).numpy()).pvalue > 1e-3


def test_moves_data_once_to_device():
    images, labels = _data(10)
    loader = DeviceBatchLoader(images, labels, 4, device="cpu")
    assert loader.images.device == torch.device("cpu") and loader.device == torch.device("cpu")
    assert loader.num_samples == 10 and len(loader) == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"batch_size": 11}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"shuffle": 1}, "shuffle"),
        ({"images": torch.zeros(10, 3, 2, 2)}, "images"),
        ({"labels": torch.zeros(9)}, "labels"),
    ],
)
def test_rejects_bad_arguments(kwargs, name):
    images, labels = _data(10)
    args = {"images": images, "labels": labels, "batch_size": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        DeviceBatchLoader(**args)


@pytest.mark.parametrize("epoch", [-1, 1.0, True])
def test_rejects_bad_epoch(epoch):
    loader = DeviceBatchLoader(*_data(10), 4)
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(epoch)
