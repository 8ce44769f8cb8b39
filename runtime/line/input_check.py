"""Sink: frames that are scored but are poor inputs (grey for a colour model, smaller than the model
input) are counted and said once each, instead of passing without a word.

The rule lives in runtime.preprocess.input_mismatch; this sink only counts what it finds, so
the summary and the stats line show how many frames of a run were such inputs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runtime.preprocess import PreprocessConfig, input_mismatch

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)

WHAT = {
    "grey": "is grey but the model takes colour (BGR): the grey channel is repeated, colour defects cannot show",
    "small": "is smaller than the model input ({height}x{width}) and is upscaled: fine defects blur",
}


class InputCheck:
    """Counts grey and small frames (`grey_frames`, `small_frames`); the first of each kind is logged."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.found = {kind: 0 for kind in WHAT}

    def emit(self, outcome: "Outcome") -> None:
        image = outcome.frame.image
        if image is None or image.size == 0:
            return
        for kind in input_mismatch(image, self.config):
            if self.found[kind] == 0:
                name = outcome.frame.name or f"frame {outcome.frame.index}"
                log.warning("%s (%dx%d) %s; counted as %s_frames in the summary", name, image.shape[1],
                            image.shape[0], WHAT[kind].format(height=self.config.height, width=self.config.width),
                            kind)
            self.found[kind] += 1

    @property
    def counts(self) -> dict[str, int]:
        return {f"{kind}_frames": count for kind, count in self.found.items()}

    def close(self) -> None:
        """Nothing held."""
