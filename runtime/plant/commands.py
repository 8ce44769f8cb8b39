"""Product changeover from the plant: commands on TOPIC/STATION/command, answered on TOPIC/STATION/command/reply.

A PLC or MES changes the product where it plans the line. A command is the JSON object of
runtime.line.changeover plus the console's token: {"action": "switch", "product": NAME,
"by": WHO, "token": SECRET, "id": ANY}. One with a wrong or missing token, or that is not a
command, is refused: said on stderr and in the reply, and never acted on. The reply, QoS 1,
echoes `id`: {"id": ..., "ok": true|false, "message": "...", "product": the product on the line,
"pending": the product loaded for the next frame}. A switch loads the product in this client's
own network thread (a few seconds at most), so the verdicts' publisher never waits for it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from typing import TYPE_CHECKING, Any

from runtime.errors import DaadError
from runtime.line.changeover import apply_command, parse_command
from runtime.line.products import ProductLine
from runtime.optional import require
from runtime.plant.mqtt import KEEPALIVE_S, MqttSettings, new_client

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)

ALSO = frozenset({"token", "id"})


def check_token(given: object, token: str | None) -> None:
    """Refuse a command without the console's token (and every command when the run has no console token)."""
    if token is None:
        raise DaadError("this run takes no commands: start `daad run` with --console and --console-token; "
                        "commands carry that token")
    if not isinstance(given, str) or not secrets.compare_digest(given.encode(), token.encode()):
        raise DaadError("wrong or missing token: a command carries the console's token as \"token\"")


class MqttCommands:
    """Sink in name only (nothing per frame): subscribes to the command topic, changes products, replies."""

    def __init__(self, settings: MqttSettings, line: ProductLine, token: str | None) -> None:
        mqtt = require("paho.mqtt.client", "--publish")
        self.settings, self.line, self.token = settings, line, token
        self.reply_topic = f"{settings.command_topic}/reply"
        self.refused = 0
        self.listening = threading.Event()  # subscribed: commands sent from now on arrive
        self._lock = threading.Lock()  # one command at a time
        self.client = new_client(mqtt, settings, f"daad-{settings.station}-{os.getpid()}-command")
        self.client.on_connect = lambda client, *_: client.subscribe(settings.command_topic, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async(settings.host, settings.port, KEEPALIVE_S)
        self.client.loop_start()

    def _on_subscribe(self, *_: Any) -> None:
        log.warning("taking product changeover commands on %s", self.settings.command_topic)
        self.listening.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            answer = self.handle(message.payload)
        client.publish(self.reply_topic, json.dumps(answer), qos=1)

    def handle(self, payload: bytes) -> dict[str, Any]:
        """The reply to one command message, after carrying it out or refusing it."""
        data: Any = None
        try:
            data = json.loads(payload)
            check_token(data.get("token") if isinstance(data, dict) else None, self.token)
            command = parse_command(data, ALSO)
            ok, message = True, apply_command(command, self.line, "mqtt")
            log.warning("%s: %s", self.settings.command_topic, message)
        except Exception as exc:  # not JSON, not a command, no token, a product that cannot load - or a bug,
            self.refused += 1     # which must not end paho's thread: the line keeps its product either way
            ok, message = False, f"refused: {exc}"
            log.warning("%s: command %s", self.settings.command_topic, message,
                        exc_info=not isinstance(exc, (ValueError, DaadError)))
        state = self.line.state()
        request_id = data.get("id") if isinstance(data, dict) else None
        return {"id": request_id, "ok": ok, "message": message, "product": state["current"],
                "pending": state["pending"]}

    @property
    def counts(self) -> dict[str, int]:
        return {"commands_refused": self.refused}

    def emit(self, outcome: "Outcome") -> None:
        """Nothing per frame: commands arrive on paho's thread."""

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
