"""Greedy k-centre coreset (PatchCore, Roth et al., CVPR 2022): the few patches that cover all.

A memory of every training patch is as good as it is slow; a random sample leaves holes where
rare but normal structure lives, and those holes become false rejects. Greedy k-centre keeps
adding the patch farthest from everything kept so far, so the largest distance from any
training patch to the memory shrinks as fast as it can (a 2-approximation of the optimum).
Distances are measured on a fixed random projection (Johnson-Lindenstrauss: distances kept
within a few percent) to make each step cheap; the memory keeps the full features.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np

from runtime.optional import require

DEFAULT_MEMORY_SIZE = 2000  # rows a patchcore memory keeps (`daad train` and `daad teach`): the search's cost lever
PROJECTION_DIM = 128  # PatchCore's choice; features narrower than this are used as they are


def check_features(features: np.ndarray) -> np.ndarray:
    """float32 P x D, finite, at least one row: the only shape the coreset takes."""
    array = np.asarray(features)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"features must be a non-empty P x D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("features contain NaN or infinity: a damaged image or a broken backbone")
    return np.ascontiguousarray(array, dtype=np.float32)


def random_projection(features: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """P x D -> P x dim with a Gaussian matrix scaled to keep lengths; D <= dim is kept as is."""
    if features.shape[1] <= dim:
        return features
    matrix = rng.standard_normal((features.shape[1], dim), dtype=np.float32) / np.sqrt(dim, dtype=np.float32)
    return features @ matrix


def greedy_coreset(
    features: np.ndarray,
    size: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Indices (ascending) of `size` rows of P x D `features` chosen by greedy k-centre.

    The same features and seed give the same indices. `size` >= P keeps every row.
    `progress(done, total)` is called every few hundred picks, for a progress bar.
    """
    features = check_features(features)
    if size < 1:
        raise ValueError(f"coreset size must be positive, got {size}")
    count = features.shape[0]
    if size >= count:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    points = random_projection(features, PROJECTION_DIM, rng)
    squared = np.einsum("ij,ij->i", points, points)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = rng.integers(count)
    nearest = np.full(count, np.inf, dtype=np.float32)
    for step in range(size):
        if step:
            chosen[step] = int(np.argmax(nearest))
        centre = points[chosen[step]]
        distance = squared - 2.0 * (points @ centre) + squared[chosen[step]]
        np.minimum(nearest, distance, out=nearest)
        nearest[chosen[step]] = -1.0  # never picked twice, even where rows repeat
        if progress is not None and (step + 1) % 250 == 0:
            progress(step + 1, size)
    return np.sort(chosen)


def coreset_rows(features: np.ndarray, size: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """The memory: `size` rows of `features` chosen by greedy_coreset, with a progress bar on stderr.

    `daad train --model patchcore` and `daad teach` both keep their memory through here, so the
    same features and seed give the same memory on either side."""
    size = min(size, len(features))
    tqdm = require("tqdm", "progress bars").tqdm
    with tqdm(total=size, desc="coreset", unit="patch", file=sys.stderr, disable=not progress) as bar:
        chosen = greedy_coreset(features, size, seed=seed, progress=lambda done, _: bar.update(done - bar.n))
        bar.update(size - bar.n)
    return np.asarray(features)[chosen]
