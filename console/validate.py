"""What a request may carry: JSON fields of the right type, numbers in range, bodies of bounded size.

Every route parses its input here, so a wrong input is a 4xx with one line naming the field,
never a silent reinterpretation (`true` as 1, `"false"` as true, 0 parts as all of them) or a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from console.errors import Refused, TooLarge

MAX_BODY_BYTES = 64 * 1024  # the largest change the pages send is a calibration request of a few hundred bytes
MAX_TEXT = 1000  # characters of a note, a name or a folder path
KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list"}
_REQUIRED = object()


def body_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body (an empty body is {})."""
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise Refused("the request body is JSON nested too deeply") from None
    except ValueError as exc:
        raise Refused(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Refused("the request body must be a JSON object")
    return body


def only(body: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise Refused(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(sorted(known))}")


def field(body: dict[str, Any], name: str, kind: type, default: Any = _REQUIRED,
          low: float | None = None, high: float | None = None) -> Any:
    """body[name] as `kind` (JSON's own type: no strings as numbers, no numbers as booleans), within [low, high]."""
    if name not in body:
        if default is _REQUIRED:
            raise Refused(f"missing field {name!r}")
        return default
    return checked(name, body[name], kind, low, high)


def checked(name: str, value: Any, kind: type, low: float | None = None, high: float | None = None) -> Any:
    if kind is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:
        fits = isinstance(value, kind)
    if not fits:
        raise Refused(f"field {name!r} must be {KINDS[kind]}, got {shown(value)}")
    if kind is str and len(value) > MAX_TEXT:
        raise Refused(f"field {name!r} is longer than {MAX_TEXT} characters")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Refused(f"field {name!r} must be between {low:g} and {high:g}, got {value!r}")
    return value


def query_int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole number from the query string, digits only: `1.5`, `true` or `-5` are refused, not rounded."""
    text = params.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise Refused(f"query parameter {name!r} must be a whole number from {low} to {high}, got {shown(text)}")
    return checked(name, int(text), int, low, high)


def check_size(declared: str | None, received: int) -> None:
    """Refuse a body over MAX_BODY_BYTES, by its Content-Length before reading, or as it arrives."""
    if received > MAX_BODY_BYTES or (declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES):
        raise TooLarge(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB; the console's changes are small")


def shown(value: Any) -> str:
    """A value as the message shows it: short, one line."""
    text = " ".join(json.dumps(value).split()) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
