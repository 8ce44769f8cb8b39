"""Prometheus metrics of a station: `--metrics-port N` serves /metrics for a Prometheus server to scrape.

Per frame, `emit` counts the verdict and observes each stage's latency into a histogram
(a few lock-protected increments: microseconds). Everything else the run counts - drops,
read errors, pictures dropped, events published and pending, rejects - is read from the same
counters as the stats line, at scrape time, by a collector: one set of numbers, two views.
Station, product, model sha256, bundle, backend, precision and run id are labels of
`daad_station_info`, read at scrape time too: a product changeover shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from runtime.errors import DaadError
from runtime.line.events import FAULT, FAULT_CAUSES, NG, OK
from runtime.optional import require

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

# Seconds; from a fast TensorRT stage to a slow CPU frame with queueing.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GAUGES = {"pending", "unprocessed", "broker_unreachable"}  # counts that go down again; the rest only grow
HELP = {
    "read": "Frames read from the source",
    "dropped": "Frames dropped in realtime mode because the model was busy",
    "unprocessed": "Frames read but not scored when the run stopped",
    "stalls": "Times the source delivered no frame for a minute",
    "read_errors": "Failed reads of a live source",
    "reconnects": "Times a live source was reopened",
    "artefacts_dropped": "Pictures (NG images, overlay video, window) dropped because their writer was behind",
    "artefacts_failed": "Picture sinks that stopped after an error",
    "published": "Events the MQTT broker acknowledged",
    "pending": "Events in the events file not yet acknowledged by the MQTT broker",
    "broker_unreachable": "1 while the MQTT broker has not answered for several seconds (wrong host or port, or down)",
    "rejects": "Parts sent to the reject pin (NG, and FAULT unless --fault-action pass)",
    "rejects_late": "Rejects whose verdict came after their reject time",
}


class RunCounters:
    """A collector: the run's counters (the stats line's), as Prometheus counters and gauges at scrape time."""

    def __init__(self, counters: Callable[[], dict[str, int]], prometheus: Any) -> None:
        self.counters, self.families = counters, prometheus.metrics_core

    def describe(self) -> list:
        return []  # names are known only at scrape time; describing must not read the run early

    def collect(self) -> Iterator[Any]:
        for name, value in self.counters().items():
            text = HELP.get(name, f"daad run's {name} count (see the run summary in docs/RUNTIME.md)")
            family = self.families.GaugeMetricFamily if name in GAUGES else self.families.CounterMetricFamily
            yield family(f"daad_{name}", text, value=value)


class StationInfo:
    """A collector: `daad_station_info` with the labels `info()` gives at scrape time."""

    def __init__(self, info: Callable[[], dict[str, str]], prometheus: Any) -> None:
        self.info, self.families = info, prometheus.metrics_core

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        yield self.families.InfoMetricFamily("daad_station", "Station, product, model and run", value=self.info())


class MetricsServer:
    """Sink: verdict counts and stage-latency histograms, served over HTTP with the run's counters."""

    def __init__(self, port: int, host: str, info: Callable[[], dict[str, str]], threshold: Callable[[], float],
                 counters: Callable[[], dict[str, int]]) -> None:
        prometheus = require("prometheus_client", "--metrics-port")
        registry = self.registry = prometheus.CollectorRegistry()
        self.frames = prometheus.Counter("daad_frames", "Frames judged, by verdict", ["verdict"], registry=registry)
        self._verdicts = {verdict: self.frames.labels(verdict) for verdict in (OK, NG, FAULT)}  # 0 from the start
        faults = prometheus.Counter("daad_faults", "FAULT verdicts (parts that could not be judged), by cause",
                                    ["cause"], registry=registry)
        self._faults = {cause: faults.labels(cause) for cause in FAULT_CAUSES}
        self.latency = prometheus.Histogram("daad_stage_latency_seconds", "Latency of each stage of a frame "
                                            "(total: capture to verdict; backend_*: the device's stages)",
                                            ["stage"], buckets=BUCKETS, registry=registry)
        self._stages: dict[str, Any] = {}
        gauge = prometheus.Gauge("daad_threshold", "Score above which a part is NG", registry=registry)
        gauge.set_function(threshold)  # read at scrape time: the console may switch it mid-run
        registry.register(StationInfo(info, prometheus))
        registry.register(RunCounters(counters, prometheus))
        try:
            self.server, self._thread = prometheus.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise DaadError(f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror}): "
                            f"choose a free port") from exc
        self.port = self.server.server_port

    def emit(self, outcome: "Outcome") -> None:
        self._verdicts[outcome.verdict].inc()
        if outcome.event is not None and outcome.event.fault_cause is not None:
            self._faults[outcome.event.fault_cause].inc()
        stages = {stage: ms / 1e3 for stage, ms in outcome.event.latency_ms.items()} if outcome.event else {}
        stages.update({f"backend_{stage}": seconds for stage, seconds in outcome.scored.backend_seconds.items()})
        for stage, seconds in stages.items():
            if stage not in self._stages:
                self._stages[stage] = self.latency.labels(stage)
            self._stages[stage].observe(seconds)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
