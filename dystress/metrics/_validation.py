"""Shared input checks for the metrics: every public metric validates its arguments here first.

Each check raises ``ValueError`` naming the offending parameter and what is allowed, before any
expensive work. Order in every metric: scalar arguments first (``as_int`` / ``as_positive`` /
``as_bool`` of :mod:`dystress._checks`, the package-wide rule: NumPy scalars are numbers, bools are
not), then the structure of the tensors (type, dtype, shape, device: no work), then the checks that
look at values (finite entries, zero rows, label range), which cost one host synchronisation each and
run once per metric call, never inside a chunk loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dystress._checks import as_int


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype for features ``x``: float64 stays float64, everything else runs in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """Check that a tensor has no NaN or inf (one host synchronisation)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_features(
    name: str, x: object, *, min_rows: int = 1, dim: int | None = None, finite: bool = True
) -> torch.Tensor:
    """Check a float feature matrix [N, D] with N >= ``min_rows`` (and D == ``dim`` if given).

    ``finite=False`` checks the structure only (type, dtype, shape: no work); the finite check is then
    left to a later ``check_finite``, once every cheap check has passed.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [N, D], got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor [N, D], got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least {min_rows} row(s) and 1 column, got shape {tuple(x.shape)}"
        )
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {tuple(x.shape)}")
    return check_finite(name, x) if finite else x


def check_same_device(name: str, x: torch.Tensor, reference_name: str, reference: torch.Tensor) -> None:
    """Check that ``x`` lives on the same device as ``reference``."""
    if x.device != reference.device:
        raise ValueError(f"{name} is on {x.device} but {reference_name} is on {reference.device}")


def check_labels(name: str, labels: object, n: int, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Check integer labels [n] on the device of ``like``; return them as int64."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [N] of integers, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {like_name} has {n} rows")
    check_same_device(name, labels, like_name, like)
    return labels.long()


def check_class_range(name: str, labels: torch.Tensor, num_classes: int | None, *others: torch.Tensor) -> int:
    """Check labels lie in [0, num_classes); infer ``num_classes`` as max label + 1 when it is None."""
    lo = min(int(t.min()) for t in (labels, *others))
    hi = max(int(t.max()) for t in (labels, *others))
    if lo < 0:
        raise ValueError(f"{name} must be >= 0, got a label {lo}")
    if num_classes is None:
        return hi + 1
    as_int("num_classes", num_classes, 1)
    if hi >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}, got a label {hi}")
    return num_classes


def normalize_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the rows of a checked feature matrix in its compute dtype; zero rows raise."""
    x = x.to(compute_dtype(x))
    norms = torch.linalg.vector_norm(x, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        row = int(zero.nonzero()[0, 0])
        raise ValueError(f"{name} has a zero vector (row {row}) that cannot be L2-normalised")
    return F.normalize(x, dim=1)


def checked_normalized(name: str, x: object, *, min_rows: int = 1) -> torch.Tensor:
    """``check_features`` followed by ``normalize_rows``: the common entry of the cosine metrics."""
    return normalize_rows(name, check_features(name, x, min_rows=min_rows))


def checked_view_pair(z0: object, z1: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views' features [N, D] (row i of each is a positive pair), L2-normalised in a common dtype."""
    check_features("z0", z0, finite=False)
    check_features("z1", z1, dim=z0.shape[1], finite=False)
    if z1.shape[0] != z0.shape[0]:
        raise ValueError(f"z1 has {z1.shape[0]} rows but z0 has {z0.shape[0]}: rows must be positive pairs")
    check_same_device("z1", z1, "z0", z0)
    check_finite("z0", z0)
    check_finite("z1", z1)
    a = normalize_rows("z0", z0)
    b = normalize_rows("z1", z1)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def check_train_test(
    train_features: object,
    train_labels: object,
    test_features: object,
    test_labels: object,
    *,
    min_train_rows: int = 1,
    finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a labelled train set [N, D] and test set [M, D] on one device; return the int64 labels.

    ``finite=False``: structure only (no work); call ``check_finite`` on both feature sets later.
    """
    check_features("train_features", train_features, min_rows=min_train_rows, finite=False)
    check_features("test_features", test_features, dim=train_features.shape[1], finite=False)
    check_same_device("test_features", test_features, "train_features", train_features)
    y_train = check_labels(
        "train_labels", train_labels, train_features.shape[0], train_features, "train_features"
    )
    y_test = check_labels("test_labels", test_labels, test_features.shape[0], test_features, "test_features")
    if finite:
        check_finite("train_features", train_features)
        check_finite("test_features", test_features)
    return y_train, y_test
