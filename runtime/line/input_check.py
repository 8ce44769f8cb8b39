"""Sink: grey frames given to a colour model are scored, but counted and said once, not passed without a word.

The rule is runtime.preprocess.grey_for_colour (calibration and training use it too); frames too
small to enlarge are refused by prepare_frame and become FAULT events with the reason, counted
as FAULTs only, not as grey frames (they were never scored).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runtime.line.events import FAULT
from runtime.preprocess import PreprocessConfig, grey_for_colour

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)


class InputCheck:
    """Counts grey frames for a colour model (`grey_frames`); the first one is logged with its name."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.grey = 0

    def emit(self, outcome: "Outcome") -> None:
        image = outcome.frame.image
        if outcome.verdict == FAULT or image is None or image.size == 0 or not grey_for_colour(image, self.config):
            return
        if self.grey == 0:
            log.warning("%s is grey but the model takes colour (BGR): scored with the grey repeated in all three "
                        "channels, so colour defects cannot show; grey frames are counted as grey_frames",
                        outcome.frame.name or f"frame {outcome.frame.index}")
        self.grey += 1

    @property
    def counts(self) -> dict[str, int]:
        return {"grey_frames": self.grey}

    def close(self) -> None:
        """Nothing held."""
