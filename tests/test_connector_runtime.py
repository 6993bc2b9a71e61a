"""The connector runtime: `plexus connector run` as a real process against a real node (file
sink end to end, list, metrics, SIGTERM, kill -9 and restart, transforms), and the sink loop
in-process with sinks that fail for a while or for good."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from node.server import Node
from plexus.certs import make_ca, make_node_cert
from plexus.client import Client, Event
from plexus.connectors import config
from plexus.connectors.base import (
    ConnectorSection,
    ConsumeSection,
    PermanentError,
    Section,
    Sink,
    Stats,
    TransientError,
)
from plexus.connectors.runtime import run_connector
from tests.harness import NodeProcess, Nodes, eventually, free_port, wait_for
from tests.test_local_cluster import Local

pytestmark = pytest.mark.timeout(90)

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]
ROOT = Path(__file__).resolve().parent.parent


def sink_file(tmp_path: Path, name: str = "archive", transform: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    extra = f'transform = "{transform}"\n' if transform else ""
    path.write_text(
        f'[connector]\nname = "{name}"\nkind = "file-sink"\n{extra}'
        f'[consume]\nqueue = "{name}"\nsubscribe = ["orders/>"]\nprefetch = 64\n'
        f'[file]\npath = "{tmp_path / (name + ".jsonl")}"\n'
    )
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    # A line being written by the connector right now may be cut: only whole lines count.
    return [json.loads(line) for line in text.split("\n")[:-1]]


class ConnectorProcess:
    """One `plexus connector run` process; its first stdout line says it runs."""

    def __init__(
        self,
        file: Path,
        server: str,
        *extra: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.stderr = file.parent / f"{file.stem}.stderr"
        env = {**(env or os.environ), "PYTHONPATH": str(ROOT)}
        where = (
            ["--region", server.removeprefix("region:")]
            if server.startswith("region:")
            else [
                "--server",
                server,
            ]
        )
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [*PLEXUS, "connector", "run", str(file), *where, *extra],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=cwd,
                env=env,
            )
        self.started = threading.Event()
        self.first_line = ""
        threading.Thread(target=self._watch, daemon=True).start()
        wait_for(
            lambda: self.started.is_set() or self.proc.poll() is not None, 20, "connector start"
        )
        assert self.started.is_set(), self.stderr.read_text()

    def _watch(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not self.first_line:
                self.first_line = line.decode()
                self.started.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


@pytest.fixture
def connectors() -> Iterator[list[ConnectorProcess]]:
    started: list[ConnectorProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()
            if process.proc.stdout is not None:
                process.proc.stdout.close()


def listed(server: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*PLEXUS, "connector", "list", "--server", server, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


async def publish(server: str, topics: Sequence[str]) -> list[int]:
    async with await Client.connect(server) as client:
        futures = [client.publish_nowait(t, t.encode(), guaranteed=True) for t in topics]
        return [i for i in await asyncio.gather(*futures) if i is not None]


async def test_file_sink_end_to_end_listed_scraped_and_stopped_by_sigterm(
    tmp_path: Path, node: NodeProcess, connectors: list[ConnectorProcess]
) -> None:
    port = free_port()
    running = ConnectorProcess(sink_file(tmp_path), node.address, "--metrics", str(port))
    connectors.append(running)
    assert running.first_line.startswith("connector archive (file-sink) running in region us")
    assert f"metrics on http://127.0.0.1:{port}/metrics" in running.first_line

    topics = [f"orders/{i}" for i in range(300)]
    ids = await publish(node.address, topics)
    out = tmp_path / "archive.jsonl"
    await eventually(lambda: len(lines(out)) >= 300, 30, "300 lines in the file")
    written = lines(out)
    assert [w["topic"] for w in written] == topics
    assert [int(w["id"]) for w in written] == ids
    assert written[0]["payload"] == "orders/0" and written[0]["encoding"] == "utf-8"
    assert written[0]["region"] == "us" and written[0]["delivery_count"] == 1

    def counted() -> bool:
        rows = [r for r in listed(node.address) if r["name"] == "archive"]
        return bool(rows) and rows[0]["events_out"] == 300

    await eventually(counted, 10, "the connector listed with 300 events out")
    (row,) = [r for r in listed(node.address) if r["name"] == "archive"]
    assert (row["kind"], row["state"], row["region"], row["events_in"]) == (
        "file-sink",
        "running",
        "us",
        300,
    )
    assert row["position"] == str(ids[-1]) and row["errors"] == 0

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        scraped = resp.read().decode()
    assert 'plexus_connector_events_out_total{connector="archive",kind="file-sink"} 300.0' in (
        scraped
    )
    assert 'plexus_connector_state{connector="archive",kind="file-sink",state="running"} 1.0' in (
        scraped
    )

    clients = subprocess.run(
        [*PLEXUS, "clients", "--server", node.address], capture_output=True, text=True, timeout=30
    )
    assert " archive (127.0.0.1:" in clients.stdout

    assert running.stop() == 0
    stderr = running.stderr.read_text()
    assert "Traceback" not in stderr and "archive: stopped" in stderr


async def test_metrics_over_https_with_a_certificate_verify_with_its_ca(
    tmp_path: Path, node: NodeProcess, connectors: list[ConnectorProcess]
) -> None:
    tls = tmp_path / "tls"
    make_ca(tls)
    make_node_cert(tls, "archive", ["127.0.0.1"], tls)
    port = free_port()
    tls_flags = (
        "--metrics-cert",
        str(tls / "archive.crt"),
        "--metrics-key",
        str(tls / "archive.key"),
    )
    running = ConnectorProcess(
        sink_file(tmp_path), node.address, "--metrics", str(port), *tls_flags
    )
    connectors.append(running)
    assert f"metrics on https://127.0.0.1:{port}/metrics" in running.first_line
    context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    url = f"https://127.0.0.1:{port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=context).read())
    assert b'plexus_connector_events_in_total{connector="archive",kind="file-sink"}' in body


async def test_kill_9_mid_stream_then_restart_loses_nothing(
    tmp_path: Path, node: NodeProcess, connectors: list[ConnectorProcess]
) -> None:
    file = sink_file(tmp_path)
    out = tmp_path / "archive.jsonl"
    connectors.append(first := ConnectorProcess(file, node.address))
    topics = [f"orders/{i}" for i in range(3000)]
    publishing = asyncio.create_task(publish(node.address, topics))
    await eventually(lambda: len(lines(out)) >= 500, 30, "500 lines before the kill")
    first.kill()
    at_kill = len(lines(out))
    ids = await publishing
    assert at_kill < len(ids), "the kill came after the last event: not mid-stream"
    connectors.append(ConnectorProcess(file, node.address))
    await eventually(lambda: {int(w["id"]) for w in lines(out)} >= set(ids), 60, "every event")

    written = [int(w["id"]) for w in lines(out)]
    first_seen = list(dict.fromkeys(written))
    assert first_seen == ids  # in publish order, none missing
    # Repeats only of what was unacked at the crash: at most one prefetch window, once each.
    repeats = len(written) - len(first_seen)
    assert repeats <= 64 and max(written.count(i) for i in set(written)) <= 2


async def test_a_sink_rides_through_a_kill_9_of_its_node(
    tmp_path: Path, nodes: Nodes, connectors: list[ConnectorProcess]
) -> None:
    node = nodes.start("us")
    connectors.append(running := ConnectorProcess(sink_file(tmp_path), node.address))
    out = tmp_path / "archive.jsonl"
    ids = await publish(node.address, [f"orders/{i}" for i in range(100)])
    await eventually(lambda: len(lines(out)) >= 100, 20, "100 lines before the node dies")
    node.kill()
    node = nodes.restart(node)
    ids += await publish(node.address, [f"orders/{i}" for i in range(100, 200)])
    await eventually(lambda: {int(w["id"]) for w in lines(out)} >= set(ids), 30, "every event")
    assert list(dict.fromkeys(int(w["id"]) for w in lines(out))) == ids
    assert running.proc.poll() is None
    stderr = running.stderr.read_text()
    assert "lost node at" in stderr and "reconnected to node at" in stderr


async def test_a_transform_renames_topics_and_drops_events(
    tmp_path: Path, node: NodeProcess, connectors: list[ConnectorProcess]
) -> None:
    (tmp_path / "shaping.py").write_text(
        "from plexus.connectors.base import Outgoing\n"
        "def shape(event):\n"
        "    n = int(event.topic.split('/')[1])\n"
        "    if n % 2:\n"
        "        return None\n"
        "    return Outgoing('archive/' + str(n), event.payload.upper(), {'n': str(n)})\n"
    )
    file = sink_file(tmp_path, transform="shaping:shape")
    connectors.append(ConnectorProcess(file, node.address, cwd=tmp_path))
    await publish(node.address, [f"orders/{i}" for i in range(10)])
    out = tmp_path / "archive.jsonl"
    await eventually(lambda: len(lines(out)) >= 5, 20, "the even events in the file")

    def dropped_acked() -> bool:
        rows = [r for r in listed(node.address) if r["name"] == "archive"]
        return bool(rows) and rows[0]["events_in"] == 10

    await eventually(dropped_acked, 10, "all 10 events taken in")
    written = lines(out)
    assert [w["topic"] for w in written] == [f"archive/{i}" for i in range(0, 10, 2)]
    assert written[1]["payload"] == "ORDERS/2" and written[1]["headers"] == {"n": "2"}


async def test_a_sink_in_eu_of_the_local_cluster_gets_us_events_and_is_listed(
    tmp_path: Path, connectors: list[ConnectorProcess]
) -> None:
    local = Local(tmp_path / "state")
    try:
        local.run("up")
        connectors.append(ConnectorProcess(sink_file(tmp_path), "region:eu", env=local.env))
        assert "running in region eu" in connectors[0].first_line
        local.run("pub", "orders/1", "one", "--guaranteed", "--region", "us")
        out = tmp_path / "archive.jsonl"
        await eventually(lambda: len(lines(out)) == 1, 30, "the us event in eu's file")
        assert lines(out)[0]["region"] == "us"

        def everywhere() -> list[dict[str, Any]]:
            return json.loads(local.run("connector", "list", "--json").stdout)

        await eventually(lambda: [r["events_out"] for r in everywhere()] == [1], 10, "listed")
        (row,) = everywhere()
        assert (row["name"], row["region"], row["kind"]) == ("archive", "eu", "file-sink")
        table = local.run("connector", "list").stdout
        assert "archive" in table and "file-sink" in table
        assert connectors[0].stop() == 0
    finally:
        local.close()


# ---------------------------------------------------------------- in-process sink loop


class _Settings(Section):
    connector: ConnectorSection
    consume: ConsumeSection


class RecordingSink(Sink):
    """Records what it wrote; fails as the test says."""

    kind: ClassVar[str] = "recording"
    settings: ClassVar[type[_Settings]] = _Settings
    written: ClassVar[list[str]] = []
    transient_failures: ClassVar[int] = 0
    refuse: ClassVar[bytes] = b"bad"

    async def write(self, events: Sequence[Event]) -> None:
        cls = type(self)
        if cls.transient_failures:
            cls.transient_failures -= 1
            raise TransientError("destination down")
        for event in events:
            if event.payload == cls.refuse:
                raise PermanentError(f"cannot take {event.payload!r}")
        cls.written.extend(e.topic for e in events)


@pytest.fixture
def recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(config.KINDS, "recording", f"{__name__}:RecordingSink")
    RecordingSink.written = []
    path = tmp_path / "recording.toml"
    path.write_text(
        '[connector]\nname = "rec"\nkind = "recording"\n'
        '[consume]\nqueue = "rec"\nsubscribe = ["orders/>"]\nmax_deliveries = 2\nprefetch = 8\n'
    )
    return path


async def _running(loaded: Any, client: Client) -> tuple[asyncio.Task[Stats], asyncio.Event]:
    stopping = asyncio.Event()
    task = asyncio.create_task(run_connector(loaded, client, stopping))

    async def queue_made() -> bool:
        return any(q.name == "rec" and q.consumers for q in await client.list_queues())

    await eventually(queue_made, 10, "the sink consuming its queue")
    return task, stopping


async def test_a_sink_failing_for_a_while_loses_nothing_and_keeps_order(
    inproc_node: Node, recording: Path
) -> None:
    RecordingSink.transient_failures = 4
    async with await Client.connect(inproc_node.address, name="rec") as client:
        task, stopping = await _running(config.load(recording), client)
        topics = [f"orders/{i}" for i in range(40)]
        for topic in topics:
            await client.publish(topic, b"ok", guaranteed=True)
        await eventually(lambda: len(RecordingSink.written) >= 40, 30, "40 events written")
        stopping.set()
        stats = await task
    assert RecordingSink.written == topics
    assert stats.retries == 4 and stats.events_out == 40 and stats.state == "stopped"
    assert stats.last_error == "destination down"


async def test_a_sink_refusing_an_event_for_good_fills_the_dead_message_queue(
    inproc_node: Node, recording: Path
) -> None:
    async with await Client.connect(inproc_node.address, name="rec") as client:
        task, stopping = await _running(config.load(recording), client)
        for i, payload in enumerate([b"ok", b"bad", b"ok", b"bad", b"ok"]):
            await client.publish(f"orders/{i}", payload, guaranteed=True)

        async def dead_lettered() -> bool:
            return (await client.describe_queue("rec.dmq")).depth == 2

        await eventually(dead_lettered, 20, "two events in rec.dmq")
        await eventually(lambda: len(RecordingSink.written) == 3, 10, "the good ones written")
        stopping.set()
        stats = await task
    assert RecordingSink.written == ["orders/0", "orders/2", "orders/4"]
    assert stats.dead_lettered == 2 and stats.errors >= 4  # each bad event, delivered twice
    assert "cannot take b'bad'" in stats.last_error


async def test_a_stop_while_retrying_abandons_the_batch_unacked(
    inproc_node: Node, recording: Path
) -> None:
    RecordingSink.transient_failures = 1_000_000
    async with await Client.connect(inproc_node.address, name="rec") as client:
        task, stopping = await _running(config.load(recording), client)
        await client.publish("orders/1", b"ok", guaranteed=True)
        await eventually(
            lambda: task.done() or RecordingSink.transient_failures < 999_998, 10, "retrying"
        )
        started = time.monotonic()
        stopping.set()
        stats = await task
        assert time.monotonic() - started < 2
        assert stats.state == "stopped" and stats.retries >= 2
        # Nothing was acked: the event waits in the queue for the next run.
        assert (await client.describe_queue("rec")).depth == 1
    RecordingSink.transient_failures = 0


def test_a_file_sink_that_cannot_open_its_file_exits_1_naming_it(
    tmp_path: Path, node: NodeProcess
) -> None:
    file = sink_file(tmp_path)
    file.write_text(file.read_text().replace(str(tmp_path), str(tmp_path / "missing-dir")))
    out = subprocess.run(
        [*PLEXUS, "connector", "run", str(file), "--server", node.address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines()[-1] == (
        f"error: [file] path '{tmp_path / 'missing-dir' / 'archive.jsonl'}': "
        "cannot open for appending: No such file or directory"
    )


async def test_a_sink_whose_queue_is_deleted_exits_1_naming_it(
    tmp_path: Path, node: NodeProcess, connectors: list[ConnectorProcess]
) -> None:
    connectors.append(running := ConnectorProcess(sink_file(tmp_path), node.address))
    async with await Client.connect(node.address) as client:
        await client.delete_queue("archive")
    assert await asyncio.to_thread(running.proc.wait, 20) == 1
    last = running.stderr.read_text().splitlines()[-1]
    assert last.startswith("error: ") and "archive" in last, last
