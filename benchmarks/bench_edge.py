"""MQTT and HTTP at the edge, side by side with Debian's Mosquitto (issue 13).

One run, one machine, the same paho-mqtt client for both brokers: a
subscriber process and a publisher process, each with paho's own network
loop, 100-byte payloads, MQTT 3.1.1, clean sessions.

- **QoS 0 / QoS 1 publish -> subscriber, events/s**: the publisher sends
  EVENTS as fast as paho lets it (QoS 1 with up to INFLIGHT unacked); the
  rate is what the subscriber received over the time from its first to its
  last arrival. A Plexus QoS 1 publish is a guaranteed event (PUBACK once it
  is durable in LMDB, a group-committed fsync); Mosquitto runs as Debian
  ships it, without persistence (its QoS 1 messages live in memory).
- **Latency at RATE/s**: the publisher stamps `time.monotonic_ns()` into
  each payload on a fixed schedule for SECONDS; the subscriber (CLOCK_MONOTONIC
  is system-wide on Linux) takes p50/p99 of arrival minus stamp.
- **HTTP publish, events/s** (Plexus only: Mosquitto has no HTTP): `curl
  --parallel` over CONNECTIONS keep-alive connections POSTs HTTP_EVENTS to
  `/v1/events/{topic}`, direct and `?guaranteed=true` (answered once durable),
  into a queue; beside it, httpx from two client processes (bench_http.py).

    .venv/bin/python benchmarks/bench_edge.py        (needs Debian's mosquitto)
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench_http
from common import PAYLOAD_BYTES, Node, Workers, figure, free_port, percentile, report_errors

EVENTS = 50_000
INFLIGHT = 1_000
RATE = 1_000
SECONDS = 5.0
WARMUP_EVENTS = 200
HTTP_EVENTS = 10_000
HTTP_SECONDS = 5.0
HTTP_PAYLOAD = b"x" * PAYLOAD_BYTES
CONNECTIONS = 16
QUIET_S = 3.0  # a subscriber that hears nothing for this long reports what it has
STAMP = struct.Struct("<q")
PADDING = b"x" * (PAYLOAD_BYTES - STAMP.size)
TOPIC = "bench/edge"
MOSQUITTO_START_S = 5.0


@contextlib.contextmanager
def mosquitto() -> Iterator[tuple[str, int]]:
    """Debian's Mosquitto on a free loopback port, anonymous, no persistence."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise RuntimeError("mosquitto is not installed (Debian's package: mosquitto)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="plexus-bench-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_listening(port, proc)
            yield "127.0.0.1", port
        finally:
            proc.terminate()
            proc.wait(5)


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + MOSQUITTO_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError("mosquitto did not start listening in time")


def _client(name: str) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    return client


@report_errors
def subscriber(results: Any, host: str, port: int, qos: int, expected: int, ready: Any) -> None:
    arrivals: list[int] = []
    delays: list[int] = []
    client = _client(f"bench-sub-{qos}")

    def on_subscribe(*_args: Any) -> None:
        ready.set()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        now = time.monotonic_ns()
        arrivals.append(now)
        delays.append(now - STAMP.unpack_from(message.payload)[0])

    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.subscribe(TOPIC, qos)
    last_count, quiet_since = 0, time.monotonic()
    while len(arrivals) < expected:
        client.loop(0.05)
        if len(arrivals) != last_count:
            last_count, quiet_since = len(arrivals), time.monotonic()
        elif arrivals and time.monotonic() - quiet_since > QUIET_S:
            break
    client.disconnect()
    results.put({"role": "subscriber", "arrivals": arrivals, "delays": delays})


@report_errors
def flood(results: Any, host: str, port: int, qos: int, events: int) -> None:
    """Publish `events` as fast as paho takes them."""
    client = _client(f"bench-pub-{qos}")
    client.connect(host, port, keepalive=60)
    client.loop_start()
    infos = [
        client.publish(TOPIC, STAMP.pack(time.monotonic_ns()) + PADDING, qos) for _ in range(events)
    ]
    for info in infos[-INFLIGHT:]:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    results.put({"role": "publisher"})


@report_errors
def paced(results: Any, host: str, port: int, qos: int, events: int) -> None:
    """Publish `events` at RATE/s on a fixed schedule, each stamped when it leaves."""
    client = _client(f"bench-paced-{qos}")
    client.connect(host, port, keepalive=60)
    client.loop_start()
    start = time.monotonic()
    for k in range(events):
        due = start + k / RATE
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        client.publish(TOPIC, STAMP.pack(time.monotonic_ns()) + PADDING, qos)
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    results.put({"role": "publisher"})


def _mqtt_run(host: str, port: int, qos: int, publisher: Any, events: int) -> dict[str, Any]:
    with Workers() as workers:
        ready = workers.event()
        workers.start("subscriber", subscriber, host, port, qos, events, ready)
        workers.wait(ready)
        workers.start("publisher", publisher, host, port, qos, events)
        got = {r["role"]: r for r in workers.collect(2, timeout=180)}
    return got["subscriber"]


def throughput(host: str, port: int, qos: int) -> dict[str, Any]:
    sub = _mqtt_run(host, port, qos, flood, EVENTS)
    arrivals = sub["arrivals"]
    span_s = (arrivals[-1] - arrivals[0]) / 1e9 if len(arrivals) > 1 else float("inf")
    return {"rate": len(arrivals) / span_s if span_s else 0.0, "received": len(arrivals)}


def latency(host: str, port: int, qos: int) -> dict[str, Any]:
    events = WARMUP_EVENTS + int(RATE * SECONDS)
    sub = _mqtt_run(host, port, qos, paced, events)
    delays_ms = [d / 1e6 for d in sub["delays"][WARMUP_EVENTS:]]
    return {
        "p50": percentile(delays_ms, 50),
        "p99": percentile(delays_ms, 99),
        "received": len(sub["delays"]),
        "sent": events,
    }


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    mqtt_port, http_port = free_port(), free_port()
    settings = f'mqtt = "127.0.0.1:{mqtt_port}"\nhttp = "127.0.0.1:{http_port}"'
    with Node(settings) as node, mosquitto() as (mosquitto_host, mosquitto_port):
        brokers = {
            "Plexus": ("127.0.0.1", mqtt_port),
            "Mosquitto": (mosquitto_host, mosquitto_port),
        }
        for qos in (0, 1):
            rates = {name: throughput(h, p, qos) for name, (h, p) in brokers.items()}
            for name, result in rates.items():
                rows.append(
                    figure(
                        "edge",
                        f"MQTT QoS {qos} publish -> subscriber, {name}",
                        result["rate"],
                        "events/s",
                        received=f"{result['received']:,} of {EVENTS:,}",
                    )
                )
        for qos in (0, 1):
            for name, (h, p) in brokers.items():
                result = latency(h, p, qos)
                rows.append(
                    figure(
                        "edge",
                        f"MQTT QoS {qos} latency p50 at {RATE:,}/s, {name}",
                        result["p50"],
                        "ms",
                        higher_is_better=False,
                        p99_ms=round(result["p99"], 3),
                        received=f"{result['received']:,} of {result['sent']:,}",
                    )
                )
        rows += _http_rows(node, f"http://127.0.0.1:{http_port}")
    return rows


def _http_rows(node: Node, base: str) -> list[dict[str, Any]]:
    """HTTP publish rates (bench_http's runs): httpx from two client processes, and curl
    --parallel, which loads the node where Python clients cannot."""

    async def queue(purge: bool) -> None:
        async with await node.target.connect() as client:
            if purge:
                await client.purge_queue(bench_http.QUEUE)
            else:
                await client.create_queue(bench_http.QUEUE, [bench_http.TOPIC])

    asyncio.run(queue(purge=False))
    rows = []
    for guaranteed in (False, True):
        kind = "guaranteed (200 once durable)" if guaranteed else "direct (202 once routed)"
        httpx_run = bench_http._run(
            base, guaranteed, CONNECTIONS, 2, HTTP_SECONDS, HTTP_PAYLOAD, node.pid
        )
        asyncio.run(queue(purge=True))
        curl_rate = bench_http._curl_run(base, guaranteed, CONNECTIONS, HTTP_EVENTS, HTTP_PAYLOAD)
        asyncio.run(queue(purge=True))
        rows.append(
            figure(
                "edge",
                f"HTTP publish, {kind}, curl --parallel {CONNECTIONS}",
                curl_rate,
                "events/s",
                httpx_2_processes=round(httpx_run["rate"]),
                httpx_p50_ms=round(httpx_run["p50_ms"], 2),
                httpx_node_cpu_pct=round(httpx_run["node_cpu_pct"]),
            )
        )
    return rows


if __name__ == "__main__":
    from common import fmt_number

    for row in run():
        print(f"{row['measure']:<60} {fmt_number(row['value']):>12} {row['unit']}")
