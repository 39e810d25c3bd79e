"""Exact nearest-neighbour search in row chunks: memory O(chunk x N), no approximation.

Two scores, both "higher is nearer": cosine similarity between L2-normalised rows (one matmul per
chunk) and negative Euclidean distance, computed from explicit differences (no |a|^2 - 2ab + |b|^2
cancellation; meant for low-dimensional embeddings such as 2-D UMAP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

ScoreFn = Callable[[int, int], torch.Tensor]


def cosine_scores(queries: torch.Tensor, bank: torch.Tensor) -> ScoreFn:
    """Scores [stop - start, N_bank] of query rows start:stop; both inputs already L2-normalised."""
    bank_t = bank.t()
    return lambda start, stop: queries[start:stop] @ bank_t


def neg_euclidean_scores(queries: torch.Tensor, bank: torch.Tensor) -> ScoreFn:
    """Scores -||q - b|| [stop - start, N_bank] from explicit differences (``torch.cdist`` without the
    matmul shortcut): exact, and cheap for the small D of an embedding."""
    return lambda start, stop: torch.cdist(
        queries[start:stop], bank, compute_mode="donot_use_mm_for_euclid_dist"
    ).neg_()


def score_chunks(
    score_fn: ScoreFn, n_queries: int, chunk_size: int, exclude_self: bool
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, scores)`` chunks; ``exclude_self`` sets score(query i, bank row i) to -inf.

    ``exclude_self`` assumes the queries are the bank (same rows, same order): a duplicate point is
    still a neighbour, only the row itself is excluded.
    """
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        scores = score_fn(start, stop)
        if exclude_self:
            rows = torch.arange(stop - start, device=scores.device)
            scores[rows, rows + start] = float("-inf")
        yield start, stop, scores


def chunked_topk(
    score_fn: ScoreFn, n_queries: int, k: int, chunk_size: int, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k scores and bank indices [n_queries, k], sorted by decreasing score (ties in torch.topk order)."""
    values, indices = [], []
    for _, _, scores in score_chunks(score_fn, n_queries, chunk_size, exclude_self):
        v, i = scores.topk(k, dim=1, largest=True, sorted=True)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)
