"""The reject gate: every NG verdict, and every FAULT, pulses an output pin when its part reaches the gate.

An inspection station is fail-safe: a part it could not judge (an image damaged or too small, a
failed inference, a score or threshold that is not a finite number) is rejected like a defective
one, unless `--fault-action pass` says otherwise (unsafe: such parts then go on unjudged).

`--reject gpio:PIN[:PULSE_MS[:DELAY_MS]]` drives a Jetson GPIO pin (board numbering, through
Jetson.GPIO, extra `jetson`). The pulse starts DELAY_MS after the frame was *captured* - the
moment the part was under the camera - so the loop's own latency comes out of the delay and
the gate fires at the same distance whatever the verdict cost. A verdict that arrives after
that moment fires at once and is counted (`rejects_late`): the delay is shorter than the loop.
Pulses closer together than PULSE_MS merge into one longer pulse. A timer thread drives the
pin; `emit` only schedules, so the loop never waits for a pulse.
"""

from __future__ import annotations

import heapq
import math
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from runtime.errors import DaadError
from runtime.line.events import FAULT, NG
from runtime.line.priority import renice_thread
from runtime.optional import require

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)

TIMER_NICENESS = -10  # the pin's timer goes before the loop and the pictures, where the process may (root)
FAULT_ACTIONS = ("reject", "pass")  # --fault-action: what the gate does with a part that could not be judged


class Pin(Protocol):
    """One digital output; JetsonPin drives a real one, tests use a recording one."""

    def set(self, high: bool) -> None: ...

    def close(self) -> None: ...


class JetsonPin:
    """A Jetson GPIO output in BOARD numbering (the header's pin number), low until set."""

    def __init__(self, number: int) -> None:
        self.gpio = require("Jetson.GPIO", f"--reject gpio:{number}")
        self.number = number
        self.gpio.setmode(self.gpio.BOARD)
        try:
            self.gpio.setup(number, self.gpio.OUT, initial=self.gpio.LOW)
        except ValueError as exc:  # Jetson.GPIO's message for a pin that is not a usable GPIO
            raise DaadError(f"--reject gpio:{number}: {exc}: use a GPIO pin number of the 40-pin header") from exc

    def set(self, high: bool) -> None:
        self.gpio.output(self.number, self.gpio.HIGH if high else self.gpio.LOW)

    def close(self) -> None:
        self.gpio.output(self.number, self.gpio.LOW)
        self.gpio.cleanup(self.number)


@dataclass(frozen=True)
class RejectSpec:
    """--reject gpio:PIN[:PULSE_MS[:DELAY_MS]]."""

    pin: int
    pulse_ms: float = 50.0
    delay_ms: float = 0.0


def parse_reject(text: str) -> RejectSpec:
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind != "gpio" or not 1 <= len(parts) <= 3:
            raise ValueError
        spec = RejectSpec(int(parts[0]), *(float(part) for part in parts[1:]))
    except ValueError:
        raise DaadError(f"--reject {text}: expected gpio:PIN[:PULSE_MS[:DELAY_MS]], e.g. gpio:7:50:350") from None
    if spec.pin < 1 or not 0 < spec.pulse_ms < math.inf or not 0 <= spec.delay_ms < math.inf:  # NaN fails both
        raise DaadError(f"--reject {text}: the pin must be positive, the pulse above 0 ms and the delay 0 ms or more "
                        f"(finite numbers)")
    return spec


def rejected_verdicts(fault_action: str) -> frozenset[str]:
    """The verdicts the gate pulses for: NG always, FAULT unless --fault-action pass."""
    return frozenset({NG, FAULT} if fault_action == "reject" else {NG})


class RejectGate:
    """Sink: schedules a pulse on `pin` for each NG (and FAULT) verdict; a timer thread raises and lowers the pin."""

    def __init__(self, pin: Pin, pulse_s: float, delay_s: float, reject: frozenset[str] = rejected_verdicts("reject"),
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.pin, self.pulse_s, self.delay_s, self.reject, self.clock = pin, pulse_s, delay_s, reject, clock
        self.rejects = self.late = 0
        self._starts: list[float] = []  # a heap of pulse start times (clock seconds)
        self._high_until: float | None = None
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drive, name="daad-reject", daemon=True)
        self._thread.start()

    def emit(self, outcome: "Outcome") -> None:
        if outcome.verdict not in self.reject:
            return
        start = outcome.frame.started_at + self.delay_s
        with self._changed:
            self.rejects += 1
            if self.delay_s > 0 and start < self.clock():
                self.late += 1
                if self.late == 1:
                    log.warning("a reject verdict came %.0f ms after its reject time: the reject delay is shorter "
                                "than the loop's latency (counted as rejects_late)", 1e3 * (self.clock() - start))
            heapq.heappush(self._starts, start)
            self._changed.notify()

    def _drive(self) -> None:
        renice_thread(TIMER_NICENESS)
        with self._changed:
            while True:
                now = self.clock()
                start = self._starts[0] if self._starts else None
                if start is not None and start <= now and (self._high_until is None or start <= self._high_until):
                    heapq.heappop(self._starts)  # due: raise the pin, or keep it up longer (pulses merge)
                    if self._high_until is None:
                        self.pin.set(True)
                    self._high_until = max(self._high_until or now, now + self.pulse_s)
                elif self._high_until is not None and now >= self._high_until:
                    self.pin.set(False)
                    self._high_until = None
                elif self._closing and self._high_until is None and not self._starts:
                    return
                else:
                    due = [t for t in (self._high_until, self._starts[0] if self._starts else None) if t is not None]
                    self._changed.wait(min(due) - now if due else None)

    @property
    def counts(self) -> dict[str, int]:
        return {"rejects": self.rejects, "rejects_late": self.late}

    def close(self) -> None:
        """Fire the pulses already scheduled (parts judged NG are still rejected), then release the pin."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()
        self.pin.close()


def open_reject(spec: RejectSpec, fault_action: str = "reject") -> RejectGate:
    return RejectGate(JetsonPin(spec.pin), spec.pulse_ms / 1e3, spec.delay_ms / 1e3, rejected_verdicts(fault_action))
