"""A paho-mqtt client for tests on the test's own event loop.

paho runs its network loop in a thread of its own (`loop_start`); each call
here waits for paho's answer in a worker thread, so the node in the test's
event loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT_S = 10.0
MOSQUITTO_CLIENTS = "mosquitto-clients"
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    user_properties: tuple[tuple[str, str], ...] = ()


class Device:
    """One MQTT client: connect, subscribe, publish, read what arrives."""

    def __init__(
        self,
        address: str,
        client_id: str = "",
        *,
        version: int = V311,
        clean: bool = True,
        session_expiry: int = 0,
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        keepalive: int = 60,
        will: tuple[str, bytes, int] | None = None,
        will_delay: int = 0,
        auto_ack: bool = True,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.version = host, int(port), version
        self.clean, self.session_expiry, self.keepalive = clean, session_expiry, keepalive
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": version}
        if version != V5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.client.manual_ack_set(not auto_ack)
        if username is not None or password is not None:
            self.client.username_pw_set(username or "", password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            will_props = None
            if will_delay:
                will_props = Properties(PacketTypes.WILLMESSAGE)
                will_props.WillDelayInterval = will_delay
            self.client.will_set(*will, properties=will_props)
        self.messages: queue.Queue[Message] = queue.Queue()
        self.connack = threading.Event()
        self.connect_reason: int | None = None
        self.session_present: bool | None = None
        self.disconnected = threading.Event()
        self.disconnect_reason: int | None = None
        self._acks: dict[int, tuple[threading.Event, list[int]]] = {}
        self._lock = threading.Lock()
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_subscribe
        client.on_publish = self._on_publish

    # ------------------------------------------------------------ paho's thread

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.connect_reason = reason.value
        self.session_present = flags.session_present
        self.connack.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.disconnect_reason = reason.value
        self.disconnected.set()
        self.connack.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = tuple(getattr(props, "UserProperty", ()) or ())
        self.messages.put(
            Message(msg.topic, msg.payload, msg.qos, bool(msg.retain), bool(msg.dup), user)
        )

    def _answer(self, mid: int, codes: list[int]) -> None:
        with self._lock:
            event, got = self._acks.setdefault(mid, (threading.Event(), []))
        got.extend(codes)
        event.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        self._answer(mid, [r.value for r in reasons])

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self._answer(mid, [reason.value])

    def _wait_answer(self, mid: int) -> list[int]:
        with self._lock:
            event, got = self._acks.setdefault(mid, (threading.Event(), []))
        if not event.wait(WAIT_S):
            raise AssertionError(f"no answer to message {mid} in {WAIT_S} s")
        with self._lock:
            del self._acks[mid]
        return got

    # ------------------------------------------------------------ the test's side

    async def connect(self) -> int:
        """Connect; the CONNACK's reason (0: accepted; 3.1.1 return codes as paho gives them)."""
        props = None
        if self.version == V5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        self.connack.clear()
        self.disconnected.clear()
        await asyncio.to_thread(
            self.client.connect,
            self.host,
            self.port,
            self.keepalive,
            clean_start=self.clean if self.version == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self.client.loop_start()
        if not await asyncio.to_thread(self.connack.wait, WAIT_S):
            raise AssertionError("no CONNACK")
        assert self.connect_reason is not None
        return self.connect_reason

    async def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        """SUBACK's reasons."""
        _, mid = self.client.subscribe(topic_filter, qos)
        return await asyncio.to_thread(self._wait_answer, mid)

    async def unsubscribe(self, topic_filter: str) -> None:
        _, mid = self.client.unsubscribe(topic_filter)
        await asyncio.to_thread(self._wait_answer, mid)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> int | None:
        """Publish; for QoS 1 and 2 wait for the broker's answer and return its reason."""
        info = self.client.publish(topic, payload, qos, retain)
        if qos == 0:
            return None
        [reason] = await asyncio.to_thread(self._wait_answer, info.mid)
        return reason

    async def receive(self, count: int, timeout: float = WAIT_S) -> list[Message]:
        def take() -> list[Message]:
            return [self.messages.get(timeout=timeout) for _ in range(count)]

        try:
            return await asyncio.to_thread(take)
        except queue.Empty:
            raise AssertionError(f"fewer than {count} messages in {timeout} s") from None

    async def nothing_more(self, within: float = 0.3) -> bool:
        """True when no message arrives within `within` seconds (a bound, not a sync)."""
        try:
            await asyncio.to_thread(self.messages.get, timeout=within)
        except queue.Empty:
            return True
        return False

    async def wait_disconnected(self, timeout: float = WAIT_S) -> int | None:
        if not await asyncio.to_thread(self.disconnected.wait, timeout):
            raise AssertionError(f"still connected after {timeout} s")
        return self.disconnect_reason

    async def disconnect(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.disconnected.wait, WAIT_S)
        self.client.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT (the will applies)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()  # wakes paho's thread, which then ends at once
        self.client.loop_stop()


def mosquitto_tool(name: str) -> str:
    """The path of Debian's `mosquitto_pub` or `mosquitto_sub`; a missing one fails the test
    naming its package (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: install Debian's {MOSQUITTO_CLIENTS} (make {MOSQUITTO_CLIENTS})"
        )
    return path
