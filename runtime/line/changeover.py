"""A changeover command, in the one form the console, `daad switch` and the plant's MQTT topic send.

One form for every channel, so each is checked the same way: a JSON object
{"action": "switch", "product": NAME, "by": WHO} or {"action": "rollback", "by": WHO}. Anything
else is refused with what was wrong, and nothing is done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from runtime.errors import DaadError
from runtime.line.products import ProductLine

ACTIONS = ("switch", "rollback")
FIELDS = frozenset({"action", "product", "by"})
MAX_TEXT = 200  # characters of a product or a name


class CommandError(DaadError):
    """A command that is not one: refused, never acted on."""


@dataclass(frozen=True)
class Command:
    action: str  # one of ACTIONS
    product: str | None = None  # the product to switch to; None for a roll back
    by: str = ""  # who asked, for the event line


def parse_command(data: object, also: frozenset[str] = frozenset()) -> Command:
    """A command from its JSON object; `also`: fields a channel adds (the MQTT token) and reads itself."""
    example = '{"action": "switch", "product": "NAME", "by": "WHO"} or {"action": "rollback", "by": "WHO"}'
    if not isinstance(data, dict):
        raise CommandError(f"a command is a JSON object: {example}")
    unknown = sorted(set(data) - FIELDS - also)
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(map(repr, unknown))} in the command: {example}")
    action, product, by = data.get("action"), data.get("product"), data.get("by", "")
    if action not in ACTIONS:
        raise CommandError(f"action must be 'switch' or 'rollback', got {json.dumps(action)[:60]}: {example}")
    if action == "switch" and not (isinstance(product, str) and 0 < len(product) <= MAX_TEXT):
        raise CommandError(f"a switch names its product as a string: {example}")
    if action == "rollback" and product is not None:
        raise CommandError("a roll back takes no product: it returns to the product before this one")
    if not isinstance(by, str) or len(by) > MAX_TEXT:
        raise CommandError(f"'by' must be a name of at most {MAX_TEXT} characters")
    return Command(action, product, by)


def apply_command(command: Command, line: ProductLine, channel: str) -> str:
    """Carry the command out on the line; what was done, in words (ProductError: refused, the line keeps its product)."""
    verb = "switch" if command.action == "switch" else "roll back"
    origin = f"{channel} {verb} by {command.by or 'unnamed'}"
    if command.action == "switch":
        product = line.switch(command.product, origin)
        return f"product {product.name!r} is loaded and checked; the line judges by it from its next frame"
    product = line.roll_back(origin)
    return f"back to product {product.name!r} as it ran (still open, nothing loaded); the line judges by it from " \
           f"its next frame"
