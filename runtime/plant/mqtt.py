"""The verdict to the plant over MQTT: every event line, in order, QoS 1, caught up after an outage.

`MqttPublisher` is a sink whose `emit` only wakes its thread: the loop never waits for the
network. The thread reads the events file through a Spool (runtime/plant/spool.py), publishes
each line as a message to `<topic>/<station>/verdict` with up to `window` messages awaiting
their PUBACK, and moves the spool's cursor past a line only when the broker has acknowledged it
and every line before it. While the broker is down nothing is sent; paho reconnects (1 s, then
up to 30 s apart) and re-sends the unacknowledged messages, then the thread goes on from the
file. QoS 1 is at-least-once: a repeat carries the same `event_id`, so a consumer can drop it.
A broker that cannot be reached (a wrong port, an unknown host, a broker down) looks, to paho,
like one that is slow to answer; after UNREACHABLE_S without a connection the publisher says so
on stderr, in the stats line and in the summary (`broker_unreachable`), instead of only letting
`pending` grow. The summary's warning says how the outage ended: still going on, or from when
until the broker answered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from runtime.errors import DaadError
from runtime.optional import require
from runtime.plant.spool import Spool

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)

# Of the message: the event line plus schema_version, event_id and station. 2: the readable score
# `index`, `threshold_id` and `fault_cause` beside the raw score (docs/RUNTIME.md).
SCHEMA_VERSION = 2
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
WINDOW = 20  # messages awaiting their PUBACK at once
DRAIN_S = 5.0  # at the end of a run, while connected: time to send what the file still holds
KEEPALIVE_S = 30
UNREACHABLE_S = 5.0  # without a connection this long, the broker counts as unreachable (said well within 10 s)


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to publish (from --publish mqtt[s]://HOST[:PORT]/TOPIC and the --mqtt-* options)."""

    host: str
    port: int
    topic: str
    station: str
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # CA certificates to trust (default: the system's)
    cert_file: Path | None = None  # client certificate, for brokers that require one
    key_file: Path | None = None

    @property
    def verdict_topic(self) -> str:
        return f"{self.topic}/{self.station}/verdict"

    @property
    def command_topic(self) -> str:
        return f"{self.topic}/{self.station}/command"


def check_station(station: str) -> str:
    """A station name is one MQTT topic level and a Prometheus label: no '/', '+', '#' or blanks."""
    if not station or any(char in station for char in "/+#") or station != station.strip() or " " in station:
        raise DaadError(f"--station {station!r} must be one word without '/', '+', '#' or spaces, e.g. cap-line-1")
    return station


def parse_publish_url(url: str, station: str, **options: Any) -> MqttSettings:
    """mqtt://HOST[:PORT]/TOPIC (mqtts:// for TLS) into settings; `options` are the other MqttSettings fields."""
    parsed = urlparse(url)
    topic = parsed.path.strip("/")
    wildcards = "+" in topic or "#" in url or "?" in url
    if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname or not topic or wildcards:
        raise DaadError(f"--publish {url}: expected mqtt://HOST[:PORT]/TOPIC or mqtts://HOST[:PORT]/TOPIC "
                        f"(a topic without wildcards), e.g. mqtt://broker.plant:1883/inspection")
    try:
        port = DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    except ValueError as exc:
        raise DaadError(f"--publish {url}: {exc}") from exc
    if port == 0:
        raise DaadError(f"--publish {url}: port 0 is no broker's port: give the broker's port, e.g. "
                        f"{parsed.scheme}://{parsed.hostname}:{DEFAULT_PORTS[parsed.scheme]}/{topic}")
    tls = parsed.scheme == "mqtts" or options.pop("tls", False) or options.get("ca_file") is not None
    return MqttSettings(parsed.hostname, port, topic, check_station(station), tls=tls, **options)


def new_client(mqtt: Any, settings: MqttSettings, client_id: str) -> Any:
    """A paho client with the settings' credentials and TLS, reconnecting 1 s, then up to 30 s apart; not connected."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                         protocol=mqtt.MQTTv311)
    client.reconnect_delay_set(1, 30)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca_file and str(settings.ca_file),
                           certfile=settings.cert_file and str(settings.cert_file),
                           keyfile=settings.key_file and str(settings.key_file))
        except (OSError, ValueError) as exc:
            raise DaadError(f"TLS for {settings.host}:{settings.port}: {exc}: check --mqtt-ca, --mqtt-cert "
                            f"and --mqtt-key") from exc
    return client


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plant_message(line: bytes, station: str) -> bytes:
    """The message for one event line; raises ValueError when the line is not a JSON object."""
    event = json.loads(line)
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    event_id = f"{event.get('run_id')}:{event.get('frame')}"
    if "event" in event:  # not a verdict: e.g. a threshold switch, logged just before the frame it names
        event_id += f":{event['event']}"
    return json.dumps({"schema_version": SCHEMA_VERSION, "event_id": event_id, "station": station, **event}).encode()


class MqttPublisher:
    """Sink: publishes the events file to the broker from its own thread; counts published and pending."""

    def __init__(self, settings: MqttSettings, events: str | os.PathLike, window: int = WINDOW,
                 unreachable_s: float = UNREACHABLE_S) -> None:
        mqtt = require("paho.mqtt.client", "--publish")
        self.settings, self.window, self.unreachable_s = settings, window, unreachable_s
        self.unreachable = False  # no connection for unreachable_s: said once per outage, shown in the counts
        self.outages = 0  # times the broker counted as unreachable in this run
        self._outage = ("", "")  # the last one: since when, and why
        self._answered_at: str | None = None  # when the broker answered after the last one; None: it has not
        self._down_since, self._down_at = time.monotonic(), utc_now()
        self.spool = Spool(events)
        self.published = self.skipped = 0
        self._acknowledged: set[int] = set()  # message ids the broker acknowledged, not yet settled
        self._lock = threading.Lock()
        self._connected, self._wake, self._closing = threading.Event(), threading.Event(), threading.Event()
        self._tried = threading.Event()  # a first connection attempt has ended, either way
        self._drain_until = 0.0
        self.client = self._open_client(mqtt)
        self._thread = threading.Thread(target=self._publish, name="daad-mqtt", daemon=True)
        self._thread.start()

    def _open_client(self, mqtt: Any) -> Any:
        settings = self.settings
        client = new_client(mqtt, settings, f"daad-{settings.station}-{os.getpid()}")
        client.max_inflight_messages_set(self.window)
        client.on_connect, client.on_disconnect, client.on_publish = self._on_connect, self._on_disconnect, \
            self._on_publish
        client.on_connect_fail = lambda client, userdata: self._tried.set()
        client.connect_async(settings.host, settings.port, KEEPALIVE_S)
        client.loop_start()  # paho's network thread: connects, reconnects, re-sends what was not acknowledged
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._tried.set()
        if reason.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.settings.host, self.settings.port, reason)
            return
        log.warning("publishing to %s:%d, topic %s", self.settings.host, self.settings.port,
                    self.settings.verdict_topic)
        if self.unreachable:
            self._answered_at = utc_now()
        self.unreachable = False
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._closing.is_set():
            log.warning("lost the broker %s:%d (%s): events wait in %s", self.settings.host, self.settings.port,
                        reason, self.spool.events)
        if self._connected.is_set():
            self._down_since, self._down_at = time.monotonic(), utc_now()
        self._connected.clear()
        self._tried.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self._acknowledged.add(mid)
        self._wake.set()

    def emit(self, outcome: "Outcome") -> None:
        """The loop wrote an event line: wake the publisher (nothing here touches the network)."""
        self._wake.set()

    def _publish(self) -> None:
        in_flight: deque[tuple[int | None, int]] = deque()  # (message id, file offset after its line), in order
        while True:
            self._wake.clear()
            self._settle(in_flight)
            if self._closing.is_set() and self._drained(in_flight):
                return
            if self._connected.is_set() and len(in_flight) < self.window and (item := self.spool.next_line()):
                self._send(*item, in_flight)
                continue
            self._check_reachable()
            self._wake.wait(0.5)

    def _check_reachable(self) -> None:
        """Say once per outage that the broker has not answered for unreachable_s, and why that may be."""
        if self._connected.is_set() or self.unreachable or time.monotonic() - self._down_since < self.unreachable_s:
            return
        host, port = self.settings.host, self.settings.port
        try:
            socket.getaddrinfo(host, port)
            why = "nothing accepted a connection there: a wrong port, or the broker is down or refuses this station"
        except OSError as exc:
            why = f"the host name does not resolve ({exc.strerror or exc})"
        self._outage, self._answered_at = (self._down_at, why), None
        self.outages += 1
        self.unreachable = True
        log.warning("--publish: no connection to the broker %s:%d for %.0f s: %s; events wait in %s and are sent once "
                    "it answers", host, port, self.unreachable_s, why, self.spool.events)

    @property
    def warning(self) -> str | None:
        """For the summary: the last outage, and whether the broker answered after it (None: there was none)."""
        if not self.outages:
            return None
        broker, (since, why) = f"the broker {self.settings.host}:{self.settings.port}", self._outage
        times = f" (the last of {self.outages} outages in this run)" if self.outages > 1 else ""
        if self._answered_at is None:
            return (f"--publish: no connection to {broker} since {since}{times}, still none at the end of the run: "
                    f"{why}; the events not sent wait in {self.spool.events} for the next run")
        return (f"--publish: {broker} was unreachable from {since} until it answered at {self._answered_at}{times} "
                f"({why}); publishing resumed then")

    def _send(self, line: bytes, end: int, in_flight: deque[tuple[int | None, int]]) -> None:
        try:
            payload = plant_message(line, self.settings.station)
        except ValueError as exc:  # a line torn by a kill mid-write: skipped, counted, never a stuck spool
            self.skipped += 1
            log.warning("%s: skipped a line that is not an event (%s) before byte %d", self.spool.events, exc, end)
            in_flight.append((None, end))
            return
        info = self.client.publish(self.settings.verdict_topic, payload, qos=1)
        in_flight.append((info.mid, end))

    def _settle(self, in_flight: deque[tuple[int | None, int]]) -> None:
        """Move the cursor past every line acknowledged together with all lines before it."""
        with self._lock:
            while in_flight and (in_flight[0][0] is None or in_flight[0][0] in self._acknowledged):
                mid, end = in_flight.popleft()
                if mid is not None:
                    self._acknowledged.discard(mid)
                    self.published += 1
                self.spool.acknowledge(end)

    def _drained(self, in_flight: deque) -> bool:
        """At close: stop once everything is acknowledged, the broker is gone, or the drain time is up."""
        done = not in_flight and self.spool.caught_up
        gone = self._tried.is_set() and not self._connected.is_set()
        return done or gone or time.monotonic() > self._drain_until

    @property
    def counts(self) -> dict[str, int]:
        return {"published": self.published, "pending": self.spool.lines() - self.published - self.skipped,
                "broker_unreachable": int(self.unreachable)}

    def close(self) -> None:
        """Send what the file still holds (up to DRAIN_S, while connected), save the cursor, disconnect."""
        self._drain_until = time.monotonic() + DRAIN_S
        self._closing.set()
        self._wake.set()
        self._thread.join()
        self.spool.close()
        self.client.disconnect()
        self.client.loop_stop()
