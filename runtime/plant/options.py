"""`daad run`'s plant options (--reject, --publish, --metrics-port), checked at start, and the sinks they ask
for, opened verdict first."""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from runtime.errors import DaadError
from runtime.plant.commands import MqttCommands
from runtime.plant.metrics import MetricsServer
from runtime.plant.mqtt import MqttPublisher, MqttSettings, parse_publish_url
from runtime.plant.reject import FAULT_ACTIONS, RejectSpec, open_reject, parse_reject

if TYPE_CHECKING:
    from runtime.line.loop import Sink
    from runtime.line.products import ProductLine


def add_plant_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("plant outputs", "the verdict to the reject gate, the plant's MQTT broker "
                                      "and Prometheus (see docs/RUNTIME.md)")
    add = group.add_argument
    add("--reject", default=None, metavar="gpio:PIN[:PULSE_MS[:DELAY_MS]]",
        help="pulse this Jetson GPIO pin (board numbering) for every NG part and every FAULT (a part that could "
        "not be judged), DELAY_MS after its frame was captured (default pulse 50 ms, delay 0); needs "
        "daad-edge[jetson]")
    add("--fault-action", choices=FAULT_ACTIONS, default="reject",
        help="with --reject: reject (default): a FAULT part pulses the reject pin like an NG one; pass: it does "
        "not - UNSAFE, a part the station could not judge goes on to the customer")
    add("--publish", default=None, metavar="mqtt://HOST[:PORT]/TOPIC",
        help="publish every event to TOPIC/STATION/verdict, QoS 1 (mqtts:// for TLS); needs --events, which is "
        "the spool that survives broker outages; needs daad-edge[plant]")
    add("--station", default=socket.gethostname(), metavar="NAME",
        help="this station's name in every message, topic and metric (default: the host name)")
    add("--mqtt-user", default=None, metavar="USER", help="user name for the broker")
    add("--mqtt-password-file", type=Path, default=None, metavar="FILE",
        help="file whose first line is the broker password (kept off the command line)")
    add("--mqtt-ca", type=Path, default=None, metavar="FILE", help="CA certificates for TLS (turns TLS on)")
    add("--mqtt-cert", type=Path, default=None, metavar="FILE", help="client certificate for TLS")
    add("--mqtt-key", type=Path, default=None, metavar="FILE", help="client key for TLS")
    add("--metrics-port", type=port_number, default=None, metavar="N",
        help="serve Prometheus metrics on http://HOST:N/metrics (0: any free port); needs daad-edge[plant]")
    add("--metrics-host", default="0.0.0.0", metavar="ADDR", help="address the metrics server listens on")


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 (any free one) to 65535, got {text}")
    return port


def read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return (path.read_text(encoding="utf-8").splitlines() or [""])[0]
    except OSError as exc:
        raise DaadError(f"--mqtt-password-file {path}: cannot read it ({exc.strerror})") from exc


@dataclass(frozen=True)
class PlantPlan:
    """The plant outputs a run was asked for, checked before anything is opened or written."""

    reject: RejectSpec | None = None
    fault_action: str = "reject"
    publish: MqttSettings | None = None
    events: Path | None = None  # the spool of --publish
    metrics: tuple[int, str] | None = None  # (port, host)


def plan_plant_outputs(args: argparse.Namespace) -> PlantPlan:
    """Parse --reject, --publish and the metrics options: a mistake in them is one line before the model loads."""
    reject = parse_reject(args.reject) if args.reject is not None else None
    if args.fault_action == "pass" and reject is None:  # events, messages and metrics carry FAULT either way
        raise DaadError("--fault-action pass says what the reject pin does with a FAULT part, and this run has no "
                        "--reject: add --reject gpio:PIN, or drop --fault-action pass")
    settings = None
    if args.publish is not None:
        if args.events is None:
            raise DaadError("--publish needs --events FILE.jsonl: the events file is the spool that keeps "
                            "events through a broker outage")
        settings = parse_publish_url(args.publish, args.station, username=args.mqtt_user,
                                     password=read_password(args.mqtt_password_file), ca_file=args.mqtt_ca,
                                     cert_file=args.mqtt_cert, key_file=args.mqtt_key)
    metrics = (args.metrics_port, args.metrics_host) if args.metrics_port is not None else None
    return PlantPlan(reject, args.fault_action, settings, args.events, metrics)


def add_plant_outputs(sinks: list["Sink"], plan: PlantPlan, info: Callable[[], dict[str, str]],
                      threshold: Callable[[], float], counters: Callable[[], dict[str, int]],
                      products: "ProductLine | None" = None, token: str | None = None) -> None:
    """Open the reject pin, the publisher and the metrics server of `plan`, in that order (the verdict's
    priority), appending each to `sinks` as it opens, so the caller closes what did open. With a
    product line to change (--products), the publisher's broker also carries changeover commands
    that must bring `token` (the console's)."""
    if plan.reject is not None:
        sinks.append(open_reject(plan.reject, plan.fault_action))
        if plan.fault_action == "pass":
            print("daad run: warning: --fault-action pass: parts that could not be judged (FAULT) are NOT "
                  "rejected and go on unjudged; use it only where something downstream reads the FAULT events",
                  file=sys.stderr)
    if plan.publish is not None:
        settings = plan.publish
        sinks.append(MqttPublisher(settings, plan.events))
        print(f"daad run: publishing to {settings.host}:{settings.port} {settings.verdict_topic}, spool "
              f"{plan.events}", file=sys.stderr)
        if products is not None:
            sinks.append(MqttCommands(settings, products, token))
            print(f"daad run: product changeover commands on {settings.command_topic}"
                  f"{'' if token else ' (all refused: no console token)'}", file=sys.stderr)
    if plan.metrics is not None:
        port, host = plan.metrics
        server = MetricsServer(port, host, info, threshold, counters)
        sinks.append(server)
        print(f"daad run: metrics on http://{host}:{server.port}/metrics", file=sys.stderr)
