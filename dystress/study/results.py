"""The study's results as tables and analyses: one row per point, seed aggregates, the provenance
line of a book page, and the cached analysis of a run's feature snapshots (histograms, EMDs, UMAP).

Reads what :mod:`dystress.study.runner` finds on disk (:class:`~dystress.study.RunResult`); never trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dystress.provenance import analysis_version, code_version
from dystress.study.findings import mean_ci95
from dystress.study.notebook import data_root
from dystress.study.runner import RunResult

__all__ = [
    "FRAME_METRICS",
    "aggregate",
    "provenance",
    "results_frame",
    "snapshot_analysis",
]


_DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def provenance(results: Sequence[RunResult], data: str | Path | None = None) -> str:
    """One line saying what a page's numbers come from: profile, code version, the runs (complete of
    all, the devices they trained on) and, for CIFAR, whether the files under the data root are the
    official release now (by md5; ``data``: the data root, default
    :func:`dystress.study.notebook.data_root`); image folders are not checked."""
    from dystress.data.datasets import is_official_release

    if not results:
        return "no run"
    runs = {r.key: r for r in results}.values()
    done = [r for r in runs if r.status == "complete"]
    devices = sorted({str(r.final.get("device")) for r in done if r.final.get("device")})
    root = Path(data) if data is not None else data_root()
    copies = []
    kind = {True: "the official release", False: "a copy whose files differ from the official release"}
    for base in sorted({r.dataset.removesuffix("_lt") for r in done}):
        if base not in _DATA_NAMES:
            copies.append(f"{base}: not checked")
            continue
        official = is_official_release(base, root)
        copies.append(f"{_DATA_NAMES[base]} under {root}: {kind.get(official, 'files not found now')}")
    profile = results[0].profile
    version = code_version()
    text = f"profile {profile}, code version {version}: {len(done)} of {len(runs)} runs complete" + (
        f", trained on {', '.join(devices)}" if devices else ""
    )
    return text + (f"; data {'; '.join(copies)}" if copies else "")


# ---------------------------------------------------------------------------------------------- tables
#: The accuracies (percent) among the final metrics: numeric columns of :func:`results_frame`.
ACCURACIES = (
    "knn_top1",
    "knn_top5",
    "knn10_majority",
    "knn200_majority",
    "knn1_class_averaged",
    "knn10_class_averaged",
    "linear_top1",
)

#: Final metrics copied into :func:`results_frame` (absent ones are NaN / None).
FRAME_METRICS = (
    *ACCURACIES,
    "uniformity",
    "tolerance",
    "inter_class_uniformity",
    "alignment",
    "test_size",
    "train_seconds",
    "images_per_second",
    "device",
    "precision",
    "epochs",
)


def results_frame(results: Sequence[RunResult]) -> Any:
    """One row per point (a configuration shared by several points appears once per point).

    Columns: ``id, ablation, label, seed, dataset, key, status, error, temperature`` and the temperature
    parameters (``tau, tau_min, tau_max, offset, scale``), :data:`FRAME_METRICS` from the final
    metrics, ``wall_s`` (the papermill run) and ``run_dir``.
    """
    import pandas as pd

    rows = []
    for r in results:
        params = r.point.parameters
        row: dict[str, Any] = {
            "id": r.point.id,
            "ablation": r.point.ablation,
            "label": r.point.label,
            "seed": r.point.seed,
            "dataset": r.dataset,
            "key": r.key,
            "status": r.status,
            "error": r.error,
            "temperature": params.get("temperature", "cosine" if params.get("epochs") != 0 else "none"),
        }
        for name in ("tau", "tau_min", "tau_max", "offset", "scale"):
            row[name] = params.get(name, math.nan)
        for name in FRAME_METRICS:
            row[name] = r.final.get(name) if r.status == "complete" else None
        row["wall_s"] = r.info.get("wall_s")
        row["run_dir"] = str(r.run_dir)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in (*ACCURACIES, "uniformity", "tolerance", "train_seconds", "wall_s"):
        if name in frame:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def aggregate(frame: Any, value: str = "knn_top1") -> Any:
    """Mean and 95% interval of ``value`` over the seeds of each (ablation, label) with a result.

    Returns a frame with ``ablation, label, n, mean, ci, seeds`` and the temperature parameters of
    the point; points without any complete run are kept with ``n = 0`` and NaN.
    """
    import pandas as pd

    rows = []
    for (ablation, label), group in frame.groupby(["ablation", "label"], sort=False):
        values = group[value].dropna().tolist()
        mean, ci = mean_ci95(values) if values else (math.nan, math.nan)
        first = group.iloc[0]
        rows.append(
            {
                "ablation": ablation,
                "label": label,
                "n": len(values),
                "mean": mean,
                "ci": ci,
                "seeds": ", ".join(str(s) for s in sorted(group["seed"][group[value].notna()])),
                **{k: first[k] for k in ("temperature", "tau", "tau_min", "tau_max", "offset", "scale")},
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- snapshots
def snapshot_analysis(result: RunResult, umap: bool = True, bins: int = 60) -> dict[str, Any]:
    """Per-snapshot analysis of a complete run, computed once and cached in ``<run_dir>/analysis/``.

    For every ``snapshots/epoch_XXXX.pt``: TP / TN / FN similarity histograms (``bins`` on [-1, 1])
    and their pairwise EMDs, from the backbone features of the two augmented views and, where the
    snapshot holds them (runs since the projector outputs were added), from the projector outputs
    (the space the temperature acts on); labels are used for analysis only. With ``umap``, the aligned
    2-D UMAP embeddings of the monitor features and their structure scores (k = 10).

    Returns ``{"epochs": [E], "labels": int64 [N], "edges": [bins + 1], "histograms": [{kind:
    [bins]}], "emd": [{pair: float}], "proj_histograms"/"proj_emd": the same for the projector outputs
    or None, "umap": [array [N, 2]] or None, "structure": [dict] or None}``. The cache holds tensors
    only, so it loads weights-only.
    """
    import torch

    from dystress.io import atomic_torch_save

    if result.status != "complete":
        raise ValueError(f"run {result.key} is {result.status}, not complete")
    name = f"snapshots_{analysis_version()}_bins{bins}{'_umap' if umap else ''}.pt"
    cache = result.run_dir / "analysis" / name
    if cache.is_file():
        out = torch.load(cache, map_location="cpu", weights_only=True)
        if out["umap"] is not None:
            out["umap"] = [e.numpy() for e in out["umap"]]
        return out
    snaps = [torch.load(p, map_location="cpu", weights_only=True) for p in result.snapshot_paths()]
    if not snaps:
        raise ValueError(f"run {result.key} has no feature snapshot")
    out = _analyse(snaps, umap, bins)
    saved = dict(out, umap=None if out["umap"] is None else [torch.from_numpy(e) for e in out["umap"]])
    atomic_torch_save(cache, saved)
    return out


def _analyse(snaps: list[dict[str, Any]], umap: bool, bins: int) -> dict[str, Any]:
    """What :func:`snapshot_analysis` returns, computed from the loaded snapshots."""
    import torch

    from dystress.metrics import (
        aligned_umap_embeddings,
        pairwise_emd,
        similarity_distributions,
        similarity_histograms,
        structure_scores,
    )

    labels = snaps[0]["labels"]
    out: dict[str, Any] = {
        "epochs": [int(s["epoch"]) for s in snaps],
        "labels": labels,
        "histograms": [],
        "emd": [],
    }
    has_proj = all("proj_view0" in s for s in snaps)
    out["proj_histograms"] = [] if has_proj else None
    out["proj_emd"] = [] if has_proj else None
    for s in snaps:
        spaces = [("", "view0", "view1")] + ([("proj_", "proj_view0", "proj_view1")] if has_proj else [])
        for prefix, v0, v1 in spaces:
            dists = similarity_distributions(s[v0], s[v1], s["labels"])
            edges, hists = similarity_histograms(dists, bins=bins)
            out["edges"] = edges
            out[f"{prefix}histograms"].append(hists)
            out[f"{prefix}emd"].append(pairwise_emd(dists))
    out["umap"] = out["structure"] = None
    if umap:
        embeddings = aligned_umap_embeddings([s["features"] for s in snaps], labels)
        out["umap"] = embeddings
        out["structure"] = [
            structure_scores(s["features"], torch.from_numpy(e), labels, k=10)
            for s, e in zip(snaps, embeddings, strict=True)
        ]
    return out
