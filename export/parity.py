"""Parity: does the exported graph score like the PyTorch model it came from?

Both sides are runtime Backends fed the same uint8 frames, so the comparison covers exactly
what production runs (ONNX Runtime on model.onnx) against the reference (model.score).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.backends.batches import infer_batches
from runtime.errors import DaadError

# Max score error as a fraction of the spread of the reference scores (their interquartile
# range): a score is only ever compared with a threshold among other scores, so an error is
# judged against the distances between parts, never against the score's own size (standardised
# daad+ scores sit near zero, where a relative error explodes on a sound graph).
SCORE_TOLERANCE = 1e-3


@dataclass
class ParityReport:
    """Score and map agreement of a candidate backend with the reference, on named images."""

    reference: str
    candidate: str
    images: int
    source: str
    max_abs_score_error: float
    score_spread: float  # interquartile range of the reference scores (std or 1 if that is 0)
    max_spread_score_error: float  # max_abs_score_error / score_spread: what is judged
    max_abs_map_error: float
    tolerance: float = SCORE_TOLERANCE
    auroc: dict[str, float] = field(default_factory=dict)  # backend name -> image AUROC, with labels
    auroc_identical: bool | None = None
    candidate_scores: dict[str, float] = field(default_factory=dict)  # min, median, max of the candidate's scores

    @property
    def passed(self) -> bool:
        return self.max_spread_score_error <= self.tolerance and self.auroc_identical is not False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        lines = [
            f"parity {self.candidate} vs {self.reference} on {self.images} images ({self.source}): "
            f"{'PASS' if self.passed else 'FAIL'}",
            f"  max score error {self.max_spread_score_error:.2e} of the score spread (limit {self.tolerance:.0e}; "
            f"absolute {self.max_abs_score_error:.2e}, spread {self.score_spread:.3g}), "
            f"max map error {self.max_abs_map_error:.2e}",
        ]
        if self.auroc:
            values = ", ".join(f"{name} {value:.6f}" for name, value in self.auroc.items())
            lines.append(f"  image AUROC: {values} ({'identical' if self.auroc_identical else 'DIFFERENT'})")
        return "\n".join(lines)


def measure_parity(
    reference: Backend,
    candidate: Backend,
    frames: np.ndarray,
    labels: np.ndarray | None = None,
    source: str = "",
    batch: int = 8,
) -> ParityReport:
    """Score `frames` with both backends in batches of `batch`; AUROC too when both classes exist.

    Judged on the decision scale: an error within SCORE_TOLERANCE of the score spread can change
    the verdict only of a part whose score lies that close to the threshold, where any
    threshold is a coin toss anyway; identical AUROC says the ranking of good against defective
    parts is unchanged.
    """
    if len(frames) == 0:
        raise DaadError("parity needs at least one image")
    ref_scores, ref_maps = _score_all(reference, frames, batch)
    cand_scores, cand_maps = _score_all(candidate, frames, batch)
    if ref_maps.shape != cand_maps.shape:
        raise DaadError(f"anomaly maps differ in shape: {reference.name} {ref_maps.shape}, {candidate.name} {cand_maps.shape}")
    score_error = float(np.max(np.abs(cand_scores - ref_scores)))
    spread = score_spread(ref_scores)
    report = ParityReport(
        reference=reference.name,
        candidate=candidate.name,
        images=len(frames),
        source=source,
        max_abs_score_error=score_error,
        score_spread=spread,
        max_spread_score_error=score_error / spread,
        max_abs_map_error=float(np.max(np.abs(cand_maps - ref_maps))),
        candidate_scores={"min": float(cand_scores.min()), "median": float(np.median(cand_scores)),
                          "max": float(cand_scores.max()), "images": len(frames)},
    )
    if labels is not None and len(set(np.asarray(labels).tolist())) == 2:
        from train.metrics import image_auroc

        report.auroc = {reference.name: image_auroc(labels, ref_scores), candidate.name: image_auroc(labels, cand_scores)}
        report.auroc_identical = report.auroc[reference.name] == report.auroc[candidate.name]
    return report


def score_spread(scores: np.ndarray) -> float:
    """The scale parity errors are judged on: the interquartile range of `scores`, their std
    when most of them tie, 1.0 when all of them do (then the error is absolute)."""
    low, high = np.percentile(scores, [25, 75])
    return float(high - low) or float(np.std(scores)) or 1.0


def _score_all(backend: Backend, frames: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    result = infer_batches(backend, frames, batch)
    scores, maps = result.scores.astype(np.float64), result.anomaly_maps.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise DaadError(f"{backend.name} produced non-finite scores; the model or its export is broken")
    return scores, maps


def synthetic_frames(height: int, width: int, channels: int, count: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth textured frames, half with a bright or dark blob: stand-ins when no data set is at hand."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 200, size=(count, max(2, height // 8), max(2, width // 8), channels))
    rows = np.linspace(0, coarse.shape[1] - 1, height).round().astype(int)
    cols = np.linspace(0, coarse.shape[2] - 1, width).round().astype(int)
    frames = coarse[:, rows][:, :, cols] + rng.normal(0, 8, size=(count, height, width, channels))
    for index in range(0, count, 2):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        frames[index, top : top + height // 4, left : left + width // 4] = 255 if index % 4 == 0 else 0
    return np.clip(frames, 0, 255).astype(np.uint8)
