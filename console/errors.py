"""The console's refusals: each a DaadError whose `status` is the HTTP status the route answers with."""

from __future__ import annotations

from runtime.errors import DaadError


class Refused(DaadError):
    """A request the console turns down."""

    status = 400


class Unauthorised(Refused):
    status = 401


class NotFound(Refused):
    status = 404


class Busy(Refused):
    """A change the state of things does not allow now: something under way, or a name taken."""

    status = 409


class StaleModel(Refused):
    status = 409


class ProductChanged(Refused):
    """A change prepared for a product that is no longer on the line."""

    status = 409


class TooLarge(Refused):
    status = 413
