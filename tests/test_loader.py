from __future__ import annotations

import numpy as np
import pytest
import torch

from dystress.data.loader import DeviceBatchLoader, HostBatchLoader, epoch_permutation, fits_on_device

LOADERS = [DeviceBatchLoader, HostBatchLoader]


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
@pytest.mark.parametrize("loader_cls", LOADERS)
def test_batches_cover_indices_and_match_data(n, batch_size, drop_last, sizes, shuffle, loader_cls):
    images, labels = _data(n)
    loader = loader_cls(images, labels, batch_size, shuffle=shuffle, drop_last=drop_last, seed=3)
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
@pytest.mark.parametrize("loader_cls", LOADERS)
def test_rejects_bad_arguments(kwargs, name, loader_cls):
    images, labels = _data(10)
    args = {"images": images, "labels": labels, "batch_size": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        loader_cls(**args)


@pytest.mark.parametrize("epoch", [-1, 1.0, True])
@pytest.mark.parametrize("loader_cls", LOADERS)
def test_rejects_bad_epoch(epoch, loader_cls):
    loader = loader_cls(*_data(10), 4)
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(epoch)


# ------------------------------------------------------------------------------------ HostBatchLoader


def _random_data(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 4, 5), generator=gen, dtype=torch.uint8)
    return images, torch.randint(0, 100, (n,), generator=gen)


def _assert_same_epochs(a, b, epochs):
    assert len(a) == len(b)
    for epoch in epochs:
        batches_a, batches_b = _epoch(a, epoch), _epoch(b, epoch)
        assert len(batches_a) == len(batches_b) == len(a)
        for (xa, ya, ia), (xb, yb, ib) in zip(batches_a, batches_b, strict=True):
            assert xa.dtype == xb.dtype == torch.uint8 and ya.dtype == yb.dtype and ia.dtype == ib.dtype
            assert torch.equal(ia, ib) and torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xa.device == xb.device and ya.device == yb.device and ia.device == ib.device


_HOST_GRID = [
    (n, batch_size, drop_last)
    for n, batch_size in [(1, 1), (7, 3), (7, 7), (50, 16), (64, 16), (64, 64), (97, 10), (5, 8)]
    for drop_last in (True, False)
    if not (drop_last and batch_size > n)  # rejected by both (test_rejects_bad_arguments)
]


@pytest.mark.parametrize(("n", "batch_size", "drop_last"), _HOST_GRID)
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("seed", [0, 11])
def test_host_loader_yields_the_device_loader_batches(n, batch_size, drop_last, shuffle, prefetch, seed):
    images, labels = _random_data(n, seed)
    kwargs = {"batch_size": batch_size, "shuffle": shuffle, "drop_last": drop_last, "seed": seed}
    device = DeviceBatchLoader(images, labels, **kwargs)
    host = HostBatchLoader(images, labels, prefetch=prefetch, **kwargs)
    _assert_same_epochs(device, host, epochs=[0, 1, 3])
    for x, y, idx in _epoch(host, 2):  # and the values are the rows themselves
        assert torch.equal(x, images[idx]) and torch.equal(y, labels[idx])


def test_host_loader_reads_a_memory_mapped_cache(tmp_path):
    images, labels = _random_data(40, seed=5)
    np.save(tmp_path / "images.npy", images.numpy())
    mapped = torch.from_numpy(np.load(tmp_path / "images.npy", mmap_mode="c"))
    host = HostBatchLoader(mapped, labels, 8, drop_last=False, seed=2)
    _assert_same_epochs(DeviceBatchLoader(images, labels, 8, drop_last=False, seed=2), host, epochs=[0, 4])
    assert host.images.data_ptr() == mapped.data_ptr()  # kept in place, not copied


def test_host_loader_survives_an_abandoned_epoch():
    images, labels = _random_data(30)
    host, device = HostBatchLoader(images, labels, 4), DeviceBatchLoader(images, labels, 4)
    for b, _ in enumerate(host):
        if b == 2:
            break  # the prefetch of batch 3 is pending: the next epoch must not see it
    first = next(iter(host))
    assert all(torch.equal(u, v) for u, v in zip(first, next(iter(device)), strict=True))
    _assert_same_epochs(device, host, epochs=[1])


def test_host_loader_state():
    images, labels = _random_data(10)
    host = HostBatchLoader(images, labels, 4, pin_memory=True)
    assert host.images is images and host.device == torch.device("cpu") and host.labels.device == host.device
    assert not host.pin_memory  # pinning only serves copies to CUDA
    assert host.num_samples == 10 and len(host) == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"images": torch.zeros(10, 3, 2, 2, dtype=torch.uint8, device="meta")}, "images"),
        ({"pin_memory": 1}, "pin_memory"),
        ({"prefetch": None}, "prefetch"),
    ],
)
def test_host_loader_rejects_bad_arguments(kwargs, name):
    images, labels = _data(10)
    with pytest.raises(ValueError, match=name):
        HostBatchLoader(**({"images": images, "labels": labels, "batch_size": 4} | kwargs))


# ------------------------------------------------------------------------------------- fits_on_device


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
@pytest.mark.parametrize("num_bytes", [0, 1, 10**15])
def test_fits_on_cpu_always(device, num_bytes):
    assert fits_on_device(num_bytes, device) is True


@pytest.mark.parametrize(
    ("num_bytes", "fraction", "expected"),
    [
        (0, 0.5, True),
        (500, 0.5, True),
        (501, 0.5, False),
        (900, 0.9, True),
        (901, 0.9, False),
        (1000, 1.0, True),
    ],
)
def test_fits_on_cuda_compares_with_free_memory(monkeypatch, num_bytes, fraction, expected):
    seen = []

    def mem_get_info(device):
        seen.append(device)
        return 1000, 4000  # free, total

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert fits_on_device(num_bytes, "cuda:1", fraction=fraction) is expected
    assert seen == [torch.device("cuda:1")]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_bytes": -1}, "num_bytes"),
        ({"num_bytes": 1.5}, "num_bytes"),
        ({"num_bytes": True}, "num_bytes"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": "half"}, "fraction"),
        ({"device": "nonsense"}, "device"),
        ({"device": 3.5}, "device"),
    ],
)
def test_fits_on_device_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        fits_on_device(**({"num_bytes": 10, "device": "cpu"} | kwargs))


@pytest.mark.parametrize("loader_cls", [DeviceBatchLoader, HostBatchLoader])
@pytest.mark.parametrize(("n", "batch_size", "world_size"), [(12, 4, 2), (40, 12, 3), (64, 16, 4), (9, 8, 8)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_rank_shares_concatenate_to_the_single_process_batches(
    loader_cls, n, batch_size, world_size, shuffle
):
    images, labels = _random_data(n, seed=world_size)
    kwargs = {"batch_size": batch_size, "shuffle": shuffle, "seed": 4}
    single = DeviceBatchLoader(images, labels, **kwargs)
    ranks = [loader_cls(images, labels, rank=r, world_size=world_size, **kwargs) for r in range(world_size)]
    for epoch in (0, 2):
        for loader in (single, *ranks):
            loader.set_epoch(epoch)
        shares = [list(loader) for loader in ranks]
        assert all(len(s) == len(single) == n // batch_size for s in shares)
        for b, (x, y, idx) in enumerate(single):
            parts = [s[b] for s in shares]
            assert all(p[2].numel() == batch_size // world_size for p in parts)
            assert torch.equal(torch.cat([p[2] for p in parts]), idx)
            assert torch.equal(torch.cat([p[0] for p in parts]), x)
            assert torch.equal(torch.cat([p[1] for p in parts]), y)


@pytest.mark.parametrize("loader_cls", [DeviceBatchLoader, HostBatchLoader])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 0}, "world_size must be an int >= 1"),
        ({"world_size": 2, "rank": 2}, r"rank must be an int in \[0, world_size = 2\)"),
        ({"world_size": 2, "rank": -1}, r"rank must be an int in \[0, world_size = 2\)"),
        ({"world_size": 3}, "batch_size must be divisible by world_size = 3"),
        ({"world_size": 2, "drop_last": False}, "drop_last must be True when world_size > 1"),
    ],
)
def test_rejects_bad_sharding(loader_cls, kwargs, message):
    images, labels = _random_data(16, seed=0)
    with pytest.raises(ValueError, match=message):
        loader_cls(images, labels, 8, **kwargs)
