"""Linear probe on frozen, cached features: multinomial logistic regression trained with full-batch L-BFGS.

Protocol (stated in every result): features standardised with the training set's mean and standard
deviation; a linear layer (weights and bias) minimising mean cross-entropy + weight_decay / 2 ||W||^2
(bias not penalised); zero initialisation, full-batch L-BFGS with strong-Wolfe line search for a fixed
``max_iter``. The problem is strictly convex for weight_decay > 0, so the result does not depend on the
initialisation or the seed (the seed only draws the validation split of a weight-decay search).

The test set is used once, for the final score. A weight-decay grid is searched on a validation split
carved (stratified, seeded) from the training set, then the probe is refit on the whole training set.
Cached features mean no augmentation: the quick-profile protocol of docs/STUDY.md, not the 90-epoch
augmented ImageNet probe.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from dystress._checks import as_int, is_real
from dystress.metrics._validation import (
    check_class_range,
    check_train_test,
    compute_dtype,
)
from dystress.metrics.knn import true_class_rank


def _standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise with the mean / std of ``train``; constant features get std 1 (they become 0)."""
    mean = train.mean(0)
    std = train.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


def _fit(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise mean CE + wd / 2 ||W||^2 from zero with L-BFGS; return weight [C, D], bias [C], iterations."""
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(F.linear(x, weight, bias), y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    n_iter = int(optimizer.state[weight].get("n_iter", 0))
    return weight.detach(), bias.detach(), n_iter


def _topm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, m: int) -> float:
    """Top-m accuracy in percent (ties go to the smaller class index)."""
    rank = true_class_rank(F.linear(x, weight, bias), y)
    return float((rank < m).double().mean()) * 100.0


def _stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, val): about ``fraction`` of each class (at least one of a class with >= 2 samples)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(y.shape[0], generator=generator).to(y.device)
    order = order[torch.sort(y[order], stable=True).indices]  # label-sorted, random within each class
    _, inverse, counts = torch.unique(y[order], return_inverse=True, return_counts=True)
    position = torch.arange(y.shape[0], device=y.device) - (torch.cumsum(counts, 0) - counts)[inverse]
    n_val = torch.where(counts >= 2, (counts * fraction).round().long().clamp(1, None), 0)
    n_val = torch.minimum(n_val, counts - 1)
    is_val = position < n_val[inverse]
    return order[~is_val], order[is_val]


def _weight_decay_grid(weight_decay: float | Sequence[float]) -> list[float]:
    """``weight_decay`` as a non-empty list of finite numbers >= 0 (one value: a list of one)."""
    if isinstance(weight_decay, (numbers.Number, str, bytes)):  # one value (checked below)
        grid = [weight_decay]
    elif isinstance(weight_decay, Iterable):
        grid = list(weight_decay)
    else:
        raise ValueError(
            f"weight_decay must be a number >= 0 or a non-empty sequence of them, got {weight_decay!r}"
        )
    if not grid:
        raise ValueError("weight_decay must be a number >= 0 or a non-empty sequence of them")
    for wd in grid:
        if not is_real(wd) or wd < 0:
            raise ValueError(f"weight_decay values must be finite numbers >= 0, got {wd!r}")
    return grid


def _choose_weight_decay(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    grid: list[float],
    num_classes: int,
    max_iter: int,
    val_fraction: float,
    seed: int,
) -> tuple[float, dict[float, float]]:
    """The grid value with the best top-1 on a stratified validation split of the training set (ties:
    the stronger regularisation), and each value's validation top-1; a grid of one is taken as is."""
    val_top1: dict[float, float] = {}
    if len(grid) == 1:
        return float(grid[0]), val_top1
    fit_idx, val_idx = _stratified_split(y_train, val_fraction, seed)
    if val_idx.numel() == 0:
        raise ValueError("train_labels: no class has 2 samples, cannot carve a validation split")
    x_fit, x_val = _standardize(x_train[fit_idx], x_train[val_idx])
    for wd in grid:
        w, b, _ = _fit(x_fit, y_train[fit_idx], num_classes, float(wd), max_iter)
        val_top1[float(wd)] = _topm(x_val, y_train[val_idx], w, b, 1)
    return max(val_top1, key=lambda wd: (val_top1[wd], wd)), val_top1


def _protocol(
    grid: list[float],
    val_top1: dict[float, float],
    val_fraction: float,
    seed: int,
    fit: dict[str, object],
) -> dict[str, object]:
    """Every setting of the probe, for the result's ``protocol`` entry (``fit``: max_iter, n_iter,
    num_classes, n_train, n_test, dtype)."""
    return {
        "classifier": "multinomial logistic regression (weights + bias) on frozen cached features",
        "standardization": "train mean / std (population), constant features -> 0",
        "objective": "mean cross-entropy + weight_decay / 2 * ||W||^2 (bias unpenalised)",
        "optimizer": "full-batch L-BFGS, strong-Wolfe line search, zero init, history 20",
        "max_iter": fit["max_iter"],
        "n_iter": fit["n_iter"],
        "weight_decay_grid": [float(wd) for wd in grid],
        "selection": "validation split of the train set" if len(grid) > 1 else "fixed a priori",
        "val_fraction": val_fraction if len(grid) > 1 else None,
        "val_top1": {str(wd): acc for wd, acc in val_top1.items()},
        "seed": seed,
        "num_classes": fit["num_classes"],
        "n_train": fit["n_train"],
        "n_test": fit["n_test"],
        "dtype": fit["dtype"],
    }


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float | Sequence[float] = 1e-4,
    max_iter: int = 300,
    num_classes: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, object]:
    """Top-1 / top-5 test accuracy (percent) of a logistic-regression probe on frozen features.

    Args:
        train_features, test_features: [N_train, D] and [N_test, D] float features, same device.
        train_labels, test_labels: int labels [N_train] and [N_test] in [0, num_classes).
        weight_decay: a value fixed a priori (default 1e-4, about scikit-learn's C = 1 at 10k samples),
            or a grid searched on a stratified validation split of the training set.
        max_iter: L-BFGS iterations (fixed, not early-stopped on any held-out score).
        num_classes: defaults to max label + 1 over both label sets.
        val_fraction: share of each class held out for the grid search, in (0, 1).
        seed: seed of the validation split.

    Returns:
        ``{"top1", "top5" (num_classes >= 5), "train_top1", "weight_decay", "protocol": {...}}`` where
        protocol holds every setting, the grid, the validation top-1 of each grid value and the
        number of L-BFGS iterations run.
    """
    grid = _weight_decay_grid(weight_decay)
    max_iter = as_int("max_iter", max_iter, 1)
    if not is_real(val_fraction) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    val_fraction = float(val_fraction)
    seed = as_int("seed", seed, 0)
    if num_classes is not None:
        num_classes = as_int("num_classes", num_classes, 1)
    y_train, y_test = check_train_test(
        train_features, train_labels, test_features, test_labels, min_train_rows=2
    )
    num_classes = check_class_range("train_labels/test_labels", y_train, num_classes, y_test)

    dtype = torch.promote_types(compute_dtype(train_features), compute_dtype(test_features))
    x_train, x_test = train_features.to(dtype), test_features.to(dtype)
    chosen, val_top1 = _choose_weight_decay(x_train, y_train, grid, num_classes, max_iter, val_fraction, seed)
    x_train, x_test = _standardize(x_train, x_test)
    weight, bias, n_iter = _fit(x_train, y_train, num_classes, chosen, max_iter)
    result: dict[str, object] = {"top1": _topm(x_test, y_test, weight, bias, 1)}
    if num_classes >= 5:
        result["top5"] = _topm(x_test, y_test, weight, bias, 5)
    result["train_top1"] = _topm(x_train, y_train, weight, bias, 1)
    result["weight_decay"] = chosen
    fit = {
        "max_iter": max_iter,
        "n_iter": n_iter,
        "num_classes": num_classes,
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "dtype": str(dtype).removeprefix("torch."),
    }
    result["protocol"] = _protocol(grid, val_top1, val_fraction, seed, fit)
    return result
