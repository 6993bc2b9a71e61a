"""`python -m plexus.demo` (`make demo`): a local 3-region mesh and a short tour of it.

`plexus up` of the default cluster (us, eu, ap, fully linked) in a temporary
state directory; then, with the SDK: direct events published in us reach a
subscriber in eu, guaranteed events published in us land in a queue in ap,
a region added live (sa) receives events published elsewhere, and a web
client's HTTP POST in ap reaches subscribers in eu and us. The
cluster is stopped and its state deleted at the end, even when something fails.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from rich.console import Console

from plexus.client import Client
from plexus.local import membership, ops
from plexus.local.state import StateDir

INTEREST_TIMEOUT_S = 10.0
RECEIVE_TIMEOUT_S = 5.0

console = Console(highlight=False)


async def wait_routed(client: Client, topic: str, region: str, queue: str | None = None) -> None:
    """Until the client's region would route `topic` to a subscriber (or `queue`) in `region`."""
    deadline = time.monotonic() + INTEREST_TIMEOUT_S
    while True:
        view = {r["region"]: r for r in await client.explain(topic)}
        there = view.get(region, {})
        if (queue in there.get("queues", [])) if queue else there.get("subscribers"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{region} never showed interest in {topic}")
        await asyncio.sleep(0.02)


async def direct_across_regions(us: Client, eu: Client) -> None:
    console.rule("[bold]1. Direct events: a subscription in eu pulls events published in us")
    async with eu.subscribe("orders/>") as sub:
        await wait_routed(us, "orders/us/1", "eu")
        console.print("eu subscribes to [cyan]orders/>[/cyan]; us learns that interest")
        for i in range(3):
            await us.publish(f"orders/us/{i}", f'{{"order": {i}}}')
        await us.publish("payments/us/1", "not for eu")
        for _ in range(3):
            async with asyncio.timeout(RECEIVE_TIMEOUT_S):
                event = await sub.__anext__()
            console.print(
                f"  eu [green]received[/green] [cyan]{event.topic}[/cyan] "
                f"{event.payload.decode()} from region {event.origin_region}"
            )
        console.print("  payments/us/1 matched no interest in eu and never crossed the link")


async def guaranteed_across_regions(us: Client, ap: Client) -> None:
    console.rule("[bold]2. Guaranteed events: stored and forwarded to a queue in ap")
    await ap.create_queue("billing", ["orders/>"])
    await wait_routed(us, "orders/us/1", "ap", queue="billing")
    console.print("ap creates queue [magenta]billing[/magenta] on [cyan]orders/>[/cyan]")
    for i in range(5):
        event_id = await us.publish(f"orders/us/{i}", f"invoice {i}", guaranteed=True)
        console.print(f"  us published orders/us/{i}: durable and spooled (event {event_id})")
    async with ap.consume("billing", prefetch=10) as consumer:
        for _ in range(5):
            async with asyncio.timeout(RECEIVE_TIMEOUT_S):
                delivery = await consumer.__anext__()
            await delivery.ack()
            console.print(
                f"  ap [green]consumed[/green] {delivery.topic} {delivery.payload.decode()!r}, "
                "ack confirmed durable"
            )


async def region_added_live(state: StateDir, eu: Client) -> None:
    console.rule("[bold]3. A region added live: sa joins, linked to us")
    region, seconds = await asyncio.to_thread(membership.add_region, state, "sa", ["us"])
    console.print(f"sa joined on {region.grpc} in {seconds:.2f} s (Raft-replicated membership)")
    token = state.client_token()
    async with (
        await Client.connect(region.grpc, ca=region.ca, token=token) as sa,
        sa.subscribe("alerts/>") as sub,
    ):
        await wait_routed(eu, "alerts/eu/1", "sa")
        await eu.publish("alerts/eu/1", "hello sa")
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            event = await sub.__anext__()
        console.print(
            f"  sa [green]received[/green] {event.topic} {event.payload.decode()!r} "
            f"from {event.origin_region}, routed eu -> us -> sa"
        )


async def web_client_across_regions(
    state: StateDir, ap_http: str, us: Client, eu: Client, ap: Client
) -> None:
    console.rule("[bold]4. A web client: an HTTP POST in ap reaches subscribers in eu and us")
    import ssl

    import aiohttp  # the node's own HTTP stack: plexus up needs the server packages anyway

    async with eu.subscribe("sensors/>") as in_eu, us.subscribe("sensors/>") as in_us:
        await wait_routed(ap, "sensors/ap/t1", "eu")
        await wait_routed(ap, "sensors/ap/t1", "us")
        path = "/v1/events/sensors/ap/t1?guaranteed=true"
        tls = ssl.create_default_context(cafile=str(state.ca_cert))
        headers = {"Authorization": f"Bearer {state.client_token()}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"https://{ap_http}{path}", data=b"21.5", headers=headers, ssl=tls) as answer,
        ):
            body = await answer.json()
        console.print(f"  ap answered {answer.status} {body['status']} to POST {path}")
        for region, sub in (("eu", in_eu), ("us", in_us)):
            async with asyncio.timeout(RECEIVE_TIMEOUT_S):
                event = await sub.__anext__()
            console.print(
                f"  {region} [green]received[/green] {event.topic} {event.payload.decode()!r} "
                f"from {event.origin_region}"
            )


async def tour(state: StateDir, addresses: dict[str, str], ap_http: str) -> None:
    ca = state.ca_cert  # plexus up serves TLS with the local cluster's own CA
    token = state.client_token()  # the admin token `plexus up` made
    async with (
        await Client.connect(addresses["us"], ca=ca, token=token) as us,
        await Client.connect(addresses["eu"], ca=ca, token=token) as eu,
        await Client.connect(addresses["ap"], ca=ca, token=token) as ap,
    ):
        await direct_across_regions(us, eu)
        await guaranteed_across_regions(us, ap)
        await region_added_live(state, eu)
        await web_client_across_regions(state, ap_http, us, eu, ap)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plexus-demo-") as tmp:
        state = StateDir(tmp)
        console.print("[bold]Plexus demo[/bold]: plexus up (us, eu, ap, fully linked)")
        try:
            result = ops.up(state, None)
            addresses = {r.name: r.grpc for r in result.record.regions}
            console.print(
                f"cluster up in {result.elapsed_s:.2f} s: "
                + ", ".join(f"{name} {address}" for name, address in addresses.items())
            )
            [ap_http] = [r.http for r in result.record.regions if r.name == "ap"]
            asyncio.run(tour(state, addresses, ap_http or ""))
        except Exception as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
        finally:
            ops.down(state, purge=True)
    console.rule()
    console.print(f"cluster stopped; demo done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
