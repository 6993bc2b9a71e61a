"""MQTT, gRPC and HTTP across the regions of `plexus up` (real node processes, TLS and tokens
on, as users get them): a device's MQTT publish in us reaches a gRPC subscriber in eu and
a browser's SSE stream in ap, and an HTTP publish in ap reaches the device in us."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plexus.client import Client
from plexus.local.state import StateDir
from tests.harness import eventually
from tests.http_calls import bearer, sse_messages
from tests.mqtt_devices import Device

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]
DEADLINE_S = 20.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`plexus up` in a state directory of the test's own; its status, and its admin token."""
    env = {**os.environ, "PLEXUS_STATE_DIR": str(tmp_path / "state")}
    env.pop("PLEXUS_SERVER", None)

    def plexus(*args: str) -> str:
        out = subprocess.run([*PLEXUS, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"plexus {' '.join(args)}: {out.stderr}"
        return out.stdout

    plexus("up")
    try:
        status = json.loads(plexus("status", "--json"))
        status["token"] = StateDir(tmp_path / "state").client_token()
        yield status
    finally:
        plexus("down")


def region(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in status["regions"] if r["name"] == name)


async def interested(client: Client, topic: str, region_name: str) -> None:
    async def known() -> bool:
        view = {r["region"]: r for r in await client.explain(topic)}
        return bool(view.get(region_name, {}).get("subscribers"))

    await eventually(known, DEADLINE_S, f"interest in {topic} from {region_name}")


@pytest.fixture
async def sse_in_ap(cluster: dict[str, Any]) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Events on `plant/>` as an SSE stream from ap's HTTP gateway, verified with the CA."""
    verify = ssl.create_default_context(cafile=cluster["ca"])
    url = f"https://{region(cluster, 'ap')['http']}/v1/events"
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answered = asyncio.Event()

    async def read() -> None:
        async with (
            httpx.AsyncClient(verify=verify, timeout=None) as http,
            http.stream(
                "GET", url, params={"pattern": "plant/>"}, headers=bearer(cluster["token"])
            ) as response,
        ):
            assert response.status_code == 200
            answered.set()
            async for kind, data in sse_messages(response):
                if kind == "message":
                    await got.put(data)

    reader = asyncio.create_task(read())
    async with asyncio.timeout(DEADLINE_S):
        await answered.wait()
    try:
        yield got
    finally:
        reader.cancel()


async def test_mqtt_in_us_reaches_grpc_in_eu_and_sse_in_ap_and_http_in_ap_reaches_mqtt_in_us(
    cluster: dict[str, Any], sse_in_ap: asyncio.Queue[dict[str, Any]]
) -> None:
    ca, token = Path(cluster["ca"]), cluster["token"]
    device = Device(region(cluster, "us")["mqtt"], "press-7", password=token, ca=ca)
    assert await device.connect() == 0
    try:
        assert await device.subscribe("plant/cmd/#", 1) == [1]
        async with (
            await Client.connect(region(cluster, "us")["address"], ca=ca, token=token) as us,
            await Client.connect(region(cluster, "eu")["address"], ca=ca, token=token) as eu,
            eu.subscribe("plant/>") as in_eu,
        ):
            await in_eu.ready()
            await interested(us, "plant/line1/temp", "eu")
            await interested(us, "plant/line1/temp", "ap")

            assert await device.publish("plant/line1/temp", b"21.5", qos=1) == 0
            [grpc_event] = await in_eu.next_batch(timeout=DEADLINE_S)
            assert (grpc_event.topic, grpc_event.payload) == ("plant/line1/temp", b"21.5")
            assert grpc_event.origin_region == "us"
            async with asyncio.timeout(DEADLINE_S):
                sse_event = await sse_in_ap.get()
            assert (sse_event["topic"], sse_event["payload"]) == ("plant/line1/temp", "21.5")

            # And back: a web client's guaranteed POST in ap reaches the device in us.
            async with await Client.connect(
                region(cluster, "ap")["address"], ca=ca, token=token
            ) as ap:
                await interested(ap, "plant/cmd/stop", "us")
            verify = ssl.create_default_context(cafile=str(ca))
            async with httpx.AsyncClient(verify=verify) as http:
                answer = await http.post(
                    f"https://{region(cluster, 'ap')['http']}/v1/events/plant/cmd/stop",
                    params={"guaranteed": "true"},
                    content=b"now",
                    headers=bearer(token),
                )
            assert answer.status_code == 200, answer.text
            [command] = await device.receive(1, timeout=DEADLINE_S)
            assert (command.topic, command.payload, command.qos) == ("plant/cmd/stop", b"now", 1)
    finally:
        device.stop()
