"""The product the console's pages are about: the one judging the line when the request came.

With --products the line changes product while the console runs. Every page (calibrate, review,
history, drift) is about the product on the line, so a threshold is calculated, saved and rolled
back, and a rejected part reviewed, for the product whose parts they are. A request works on the
product taken once at its start; a change prepared for another one (a page loaded before a
changeover, a calibration calculated before it) is refused, never applied to the wrong product.
"""

from __future__ import annotations

from dataclasses import dataclass

from console.errors import ProductChanged
from runtime.bundle import Bundle


@dataclass(frozen=True, eq=False)
class OnTheLine:
    """A product as it is on the line: its name (None for a run of one --bundle) and the bundle loaded for it."""

    name: str | None
    bundle: Bundle

    def __str__(self) -> str:
        return f"product {self.name!r}" if self.name is not None else f"the bundle {self.bundle.root}"

    def same(self, other: "OnTheLine") -> bool:
        """The same product and model: one re-taught on disk and loaded again is another."""
        return (self.name, self.bundle.root, self.bundle.sha256) == (other.name, other.bundle.root, other.bundle.sha256)

    def check_page(self, shown: str | None) -> None:
        """Refuse a change asked from a page of product `shown` (None: a caller that names none) while
        another product is on the line."""
        if shown is not None and shown != self.name:
            raise ProductChanged(f"this page is about product {shown!r}, but the line now runs {self}: reload the "
                                 f"page (the console follows the product on the line)")
