"""Greedy k-centre: deterministic, covering, and strict about what it takes."""

from __future__ import annotations

import numpy as np
import pytest

from patchmemory.coreset import greedy_coreset


def clustered(seed: int = 0) -> np.ndarray:
    """Many points in one big cluster and a few in small far ones: what a random sample misses."""
    rng = np.random.default_rng(seed)
    big = rng.normal(0, 1, (2000, 16))
    rare = np.concatenate([rng.normal(20 * (k + 1), 0.1, (5, 16)) for k in range(4)])
    return np.concatenate([big, rare]).astype(np.float32)


def coverage(points: np.ndarray, chosen: np.ndarray) -> float:
    """The largest distance from any point to its nearest chosen point."""
    kept = points[chosen]
    distances = ((points[:, None, :] - kept[None]) ** 2).sum(-1)
    return float(np.sqrt(distances.min(axis=1).max()))


def test_same_seed_same_memory_and_sorted_unique_indices():
    points = clustered()
    first, second = greedy_coreset(points, 50, seed=3), greedy_coreset(points, 50, seed=3)
    assert np.array_equal(first, second)
    assert len(np.unique(first)) == 50 and np.all(np.diff(first) > 0)


def test_covers_rare_structure_that_a_random_sample_misses():
    points = clustered()
    chosen = greedy_coreset(points, 50, seed=0)
    random = np.random.default_rng(0).choice(len(points), 50, replace=False)
    assert set(range(2000, 2020)) & set(chosen.tolist())  # the rare clusters are kept
    assert coverage(points, chosen) < coverage(points, random) / 5


def test_projection_keeps_the_choice_for_wide_features():
    wide = np.random.default_rng(1).normal(size=(500, 300)).astype(np.float32)
    chosen = greedy_coreset(wide, 40, seed=0)
    assert len(chosen) == 40


def test_a_memory_larger_than_the_patches_keeps_them_all():
    assert np.array_equal(greedy_coreset(np.eye(5, dtype=np.float32), 10), np.arange(5))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 4)), "non-empty"),
    (np.zeros(4), "P x D"),
    (np.array([[0.0, np.nan]]), "NaN"),
])  # fmt: skip
def test_refuses_what_is_not_a_feature_matrix(bad, message):
    with pytest.raises(ValueError, match=message):
        greedy_coreset(bad, 1)


def test_refuses_a_size_below_one():
    with pytest.raises(ValueError, match="positive"):
        greedy_coreset(np.eye(3, dtype=np.float32), 0)
