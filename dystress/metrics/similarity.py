"""Cosine-similarity distributions of true positives, true negatives and false negatives, and their EMD.

The DySTreSS analysis (Manna et al., Sec. on the effect of temperature) compares the distributions of
the cosine similarity of three kinds of pairs, with labels used for analysis only:

- TP (true positive): the two augmented views of the same image, z0_i . z1_i;
- TN (true negative): view 0 of image i and view 1 of image j with a different label;
- FN (false negative): view 0 of image i and view 1 of image j != i with the same label.

Negatives are measured across views, the same pairing as the positive, so the three distributions
differ only in how the two images relate. Distances between distributions: Wasserstein-1 (EMD).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from dystress._checks import as_int
from dystress.metrics._validation import (
    check_features,
    check_labels,
    checked_view_pair,
)

DEFAULT_MAX_PAIRS = 100_000
PAIR_KINDS = ("tp", "tn", "fn")


def _pair_indices(
    kind: str, labels: torch.Tensor, max_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (i into z0, j into z1) of all pairs of ``kind``, or ``max_pairs`` drawn uniformly.

    Pairs are numbered 0..total-1 (by anchor in label-sorted order, then partner); either every number
    is taken (total <= max_pairs) or max_pairs numbers are drawn uniformly with replacement from a
    seeded CPU generator, so the sample is the same on every device.
    """
    n = labels.shape[0]
    device = labels.device
    if kind == "tp":
        total = n
    else:
        perm = torch.sort(labels, stable=True).indices
        _, inverse, counts = torch.unique(labels[perm], return_inverse=True, return_counts=True)
        class_size = counts[inverse]  # [N] size of the class of each label-sorted position
        class_start = (torch.cumsum(counts, 0) - counts)[inverse]  # first sorted position of that class
        partners = class_size - 1 if kind == "fn" else n - class_size
        ends = torch.cumsum(partners, 0)
        total = int(ends[-1])
    if total <= max_pairs:
        flat = torch.arange(total, device=device)
    else:
        flat = torch.randint(total, (max_pairs,), generator=generator).sort().values.to(device)
    if kind == "tp":
        return flat, flat
    p = torch.searchsorted(ends, flat, right=True)  # anchor position (label-sorted)
    r = flat - (ends[p] - partners[p])  # which partner of that anchor
    if kind == "fn":
        q = class_start[p] + r
        q = q + (q >= p).long()  # skip the anchor itself
    else:
        q = r + class_size[p] * (r >= class_start[p]).long()  # skip the anchor's class block
    return perm[p], perm[q]


def similarity_distributions(
    z0: torch.Tensor,
    z1: torch.Tensor,
    labels: torch.Tensor,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    chunk_size: int = 8192,
) -> dict[str, torch.Tensor]:
    """Cosine similarities of TP, TN and FN pairs (see module docstring); features normalised inside.

    Args:
        z0, z1: features of two views [N, D], row i of both from image i.
        labels: class labels [N] (analysis only).
        max_pairs: a kind with more pairs than this is subsampled to max_pairs pairs, drawn uniformly
            with replacement (seeded, identical on every device); otherwise all its pairs are used.
        seed: seed of the subsampling.
        chunk_size: pairs evaluated at once (memory chunk_size x D).

    Returns:
        ``{"tp": [n_tp], "tn": [n_tn], "fn": [n_fn]}`` 1-D tensors on the features' device. A kind
        without any pair (TN with one class, FN when every class has one sample) is an empty tensor.
    """
    max_pairs = as_int("max_pairs", max_pairs, 1)
    seed = as_int("seed", seed, 0)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    check_features("z0", z0, finite=False)
    y = check_labels("labels", labels, z0.shape[0], z0, "z0")
    a, b = checked_view_pair(z0, z1)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for kind in PAIR_KINDS:
        i, j = _pair_indices(kind, y, max_pairs, generator)
        sims = [
            torch.einsum("nd,nd->n", a[i[s : s + chunk_size]], b[j[s : s + chunk_size]])
            for s in range(0, i.shape[0], chunk_size)
        ]
        out[kind] = torch.cat(sims) if sims else torch.empty(0, dtype=a.dtype, device=a.device)
    return out


def _check_samples(name: str, x: object) -> torch.Tensor:
    """A non-empty finite 1-D sample (tensor or array) as a float64 tensor."""
    t = torch.as_tensor(x)
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sample, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be real numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _check_mapping(distributions: object) -> None:
    """``distributions`` must be a mapping name -> 1-D sample (e.g. ``similarity_distributions``'s)."""
    if not isinstance(distributions, Mapping):
        raise ValueError(
            f"distributions must be a mapping of names to 1-D samples, got {type(distributions).__name__}"
        )


def similarity_histograms(
    distributions: Mapping[str, torch.Tensor], bins: int = 100
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Histograms on fixed bins (``bins`` >= 1) over [-1, 1] of each 1-D sample [n] in ``distributions``.

    Bin b covers [-1 + 2b/bins, -1 + 2(b+1)/bins); the last bin is closed, and values within 1e-3 of
    the range (rounding of normalised dot products) are clamped into it, farther ones raise.

    Returns:
        ``(edges [bins + 1] float64, {name: fractions [bins] float64})``: each histogram sums to 1, or
        is all zeros for an empty sample. Tensors on the CPU.
    """
    bins = as_int("bins", bins, 1)
    _check_mapping(distributions)
    edges = torch.linspace(-1.0, 1.0, bins + 1, dtype=torch.float64)
    hists = {}
    for name, values in distributions.items():
        v = torch.as_tensor(values).detach().to("cpu", torch.float64)
        if v.ndim != 1:
            raise ValueError(f"distributions[{name!r}] must be 1-D, got shape {tuple(v.shape)}")
        if v.numel() == 0:
            hists[name] = torch.zeros(bins, dtype=torch.float64)
            continue
        if not bool(torch.isfinite(v).all()) or float(v.abs().max()) > 1.0 + 1e-3:
            raise ValueError(f"distributions[{name!r}] must hold cosine similarities in [-1, 1]")
        idx = torch.floor((v.clamp(-1.0, 1.0) + 1.0) * (bins / 2.0)).long().clamp(0, bins - 1)
        hists[name] = torch.bincount(idx, minlength=bins).double() / v.numel()
    return edges, hists


def earth_movers_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Exact Wasserstein-1 distance between the empirical distributions of 1-D samples a [n] and b [m].

    W1 = integral |F_a(x) - F_b(x)| dx over the merged sorted support (equal weights per sample),
    the quantity of ``scipy.stats.wasserstein_distance``. Computed in float64 on a's device.
    """
    ta = _check_samples("a", a)
    tb = _check_samples("b", b).to(ta.device)
    ta, tb = ta.sort().values, tb.sort().values
    support = torch.cat([ta, tb]).sort().values
    widths = support[1:] - support[:-1]
    cdf_a = torch.searchsorted(ta, support[:-1], right=True).double() / ta.shape[0]
    cdf_b = torch.searchsorted(tb, support[:-1], right=True).double() / tb.shape[0]
    return float(((cdf_a - cdf_b).abs() * widths).sum())


def pairwise_emd(distributions: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """EMD between every two non-empty 1-D samples [n] in ``distributions``, keyed ``"tp-tn"``, ``"tp-fn"``...

    ``distributions``: a mapping name -> 1-D sample, e.g. the output of ``similarity_distributions``.
    """
    _check_mapping(distributions)
    names = [name for name, v in distributions.items() if torch.as_tensor(v).numel() > 0]
    return {
        f"{x}-{y}": earth_movers_distance(distributions[x], distributions[y])
        for n, x in enumerate(names)
        for y in names[n + 1 :]
    }
