"""The `plexus` CLI as a user runs it: real processes against a real node."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plexus import Client
from tests.harness import NodeProcess, eventually

pytestmark = pytest.mark.timeout(90)

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]


def plexus(
    node: NodeProcess, *args: str, stdin: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PLEXUS, *args, "--server", node.address],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def spawn(node: NodeProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PLEXUS, *args, "--server", node.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"CLI did not exit in time: {err}") from None
    return proc.returncode, out, err


def wait_for_subscriptions(node: NodeProcess, count: int = 1, timeout: float = 15.0) -> None:
    async def check() -> None:
        async with await Client.connect(node.address) as client:

            async def registered() -> bool:
                return (await client.node_info()).subscriptions >= count

            await eventually(registered, timeout, "the subscription to register")

    asyncio.run(check())


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


EVENT_KEYS = {
    "id",
    "topic",
    "payload",
    "encoding",
    "headers",
    "delivery_count",
    "region",
    "publish_time_ms",
    "redelivered",
    "discarded_before",
}


def test_sub_prints_direct_events_in_order_as_json(node: NodeProcess) -> None:
    sub = spawn(node, "sub", "orders/>", "--count", "200", "--json", "--timeout", "30")
    wait_for_subscriptions(node)
    pub = plexus(node, "pub", "orders/{seq}", "payload {seq}", "--count", "200")
    assert pub.returncode == 0, pub.stderr
    assert "published 200 direct events" in pub.stdout
    code, out, err = finish(sub)
    assert code == 0, err
    events = json_lines(out)
    assert [e["payload"] for e in events] == [f"payload {i}" for i in range(200)]
    assert [e["topic"] for e in events] == [f"orders/{i}" for i in range(200)]
    first = events[0]
    assert set(first) >= EVENT_KEYS
    assert isinstance(first["id"], str) and first["id"].isdigit()
    assert first["region"] == "us" and first["encoding"] == "utf-8"
    assert first["redelivered"] is False and first["discarded_before"] == 0


def test_sub_plain_output_and_headers_and_binary_payload(node: NodeProcess) -> None:
    plain = spawn(node, "sub", "h/>", "--count", "1", "--timeout", "30")
    as_json = spawn(node, "sub", "h/>", "--count", "2", "--json", "--timeout", "30")
    wait_for_subscriptions(node, 2)
    pub = plexus(node, "pub", "h/1", "hello", "--header", "k=v", "--header", "empty=")
    assert pub.returncode == 0, pub.stderr
    pub = plexus(node, "pub", "h/2", stdin=b"\xff\xfe\x00")
    assert pub.returncode == 0, pub.stderr
    code, out, _ = finish(plain)
    assert code == 0 and out == "h/1 hello\n"
    code, out, _ = finish(as_json)
    first, second = json_lines(out)
    assert first["headers"] == {"k": "v", "empty": ""}
    assert second["encoding"] == "base64" and second["payload"] == "//4A"


def test_sub_count_not_reached_within_timeout_is_an_error(node: NodeProcess) -> None:
    proc = plexus(node, "sub", "none/>", "--count", "2", "--timeout", "0.5")
    assert_one_line_error(proc, "received 0 of 2 events within 0.5 s")
    assert proc.returncode == 1


def test_sub_timeout_without_count_exits_0(node: NodeProcess) -> None:
    proc = plexus(node, "sub", "none/>", "--timeout", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_guaranteed_pub_queue_consume_ack_with_json(node: NodeProcess) -> None:
    created = plexus(node, "queue", "create", "billing", "--subscribe", "orders/>", "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["name"] == "billing" and info["subscriptions"] == ["orders/>"]

    pub = plexus(node, "pub", "orders/{seq}", "g{seq}", "--count", "5", "--guaranteed", "--json")
    assert pub.returncode == 0, pub.stderr
    acks = json_lines(pub.stdout)
    assert [a["seq"] for a in acks] == [0, 1, 2, 3, 4]
    assert [a["topic"] for a in acks] == [f"orders/{i}" for i in range(5)]
    assert all(isinstance(a["id"], str) and a["id"].isdigit() for a in acks)

    described = json.loads(plexus(node, "queue", "describe", "billing", "--json").stdout)
    assert described["depth"] == 5

    consumed = plexus(node, "queue", "consume", "billing", "--count", "5", "--json")
    assert consumed.returncode == 0, consumed.stderr
    events = json_lines(consumed.stdout)
    assert [e["id"] for e in events] == [a["id"] for a in acks]
    assert [e["payload"] for e in events] == [f"g{i}" for i in range(5)]
    assert all(EVENT_KEYS | {"queue", "delivery_tag"} <= set(e) for e in events)
    assert all(e["queue"] == "billing" and e["delivery_count"] == 1 for e in events)

    after = json.loads(plexus(node, "queue", "describe", "billing", "--json").stdout)
    assert (after["depth"], after["unacked"]) == (0, 0)


def test_consume_no_ack_leaves_events_queued_and_they_come_back(node: NodeProcess) -> None:
    assert plexus(node, "queue", "create", "jobs", "--subscribe", "jobs/*").returncode == 0
    assert plexus(node, "pub", "jobs/{seq}", "j", "--count", "3", "--guaranteed").returncode == 0
    peek = plexus(node, "queue", "consume", "jobs", "--count", "3", "--no-ack", "--json")
    assert peek.returncode == 0, peek.stderr
    assert len(json_lines(peek.stdout)) == 3
    again = plexus(node, "queue", "consume", "jobs", "--count", "3", "--json")
    events = json_lines(again.stdout)
    assert all(e["redelivered"] and e["delivery_count"] == 2 for e in events), events
    assert json.loads(plexus(node, "queue", "describe", "jobs", "--json").stdout)["depth"] == 0


def test_consume_idle_timeout_exits_0(node: NodeProcess) -> None:
    assert plexus(node, "queue", "create", "idle", "--subscribe", "idle/>").returncode == 0
    started = time.monotonic()
    proc = plexus(node, "queue", "consume", "idle", "--timeout", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10


def test_pub_json_for_direct_events_has_null_ids(node: NodeProcess) -> None:
    proc = plexus(node, "pub", "d/{seq}", "x", "--count", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout) == [{"id": None, "topic": f"d/{i}", "seq": i} for i in range(3)]


def test_pub_many_guaranteed_events_with_a_rate(node: NodeProcess) -> None:
    assert plexus(node, "queue", "create", "many", "--subscribe", "m/>").returncode == 0
    proc = plexus(node, "pub", "m/x", "p", "--count", "20000", "--guaranteed")
    assert proc.returncode == 0, proc.stderr
    assert "published 20000 guaranteed events" in proc.stdout
    started = time.monotonic()
    proc = plexus(node, "pub", "m/y", "p", "--count", "50", "--rate", "100", "--guaranteed")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 0.45
    depth = json.loads(plexus(node, "queue", "describe", "many", "--json").stdout)["depth"]
    assert depth == 20050


def test_queue_list_info_and_delete(node: NodeProcess) -> None:
    assert (
        plexus(node, "queue", "create", "q1", "--subscribe", "a/>", "--exclusive").returncode == 0
    )
    listed = json.loads(plexus(node, "queue", "list", "--json").stdout)
    q1 = next(q for q in listed if q["name"] == "q1")
    assert q1["exclusive"] is True and q1["depth"] == 0
    table = plexus(node, "queue", "list")
    assert table.returncode == 0 and "q1" in table.stdout
    described = plexus(node, "queue", "describe", "q1")
    assert described.returncode == 0 and "a/>" in described.stdout
    info = json.loads(plexus(node, "info", "--json").stdout)
    assert info["region"] == "us" and info["queues"] >= 1
    assert plexus(node, "info").returncode == 0
    deleted = plexus(node, "queue", "delete", "q1")
    assert deleted.returncode == 0 and "deleted queue q1" in deleted.stdout
    assert_one_line_error(plexus(node, "queue", "describe", "q1"), "q1")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["pub", "a//b", "x"], ["invalid topic 'a//b' at level 2: empty level"]),
        (["pub", "a/*/b", "x"], ["invalid topic 'a/*/b'"]),
        (["pub", "x" * 300, "y"], ["250 bytes"]),
        (["sub", "a/>/b"], ["invalid pattern 'a/>/b'"]),
        (["sub", ""], ["invalid pattern ''"]),
        (["queue", "consume", "nosuchq"], ["nosuchq"]),
        (["queue", "describe", "nosuchq"], ["nosuchq"]),
        (["queue", "delete", "nosuchq"], ["nosuchq"]),
        (["queue", "create", "q", "--subscribe", "a/>/c"], ["invalid pattern 'a/>/c'"]),
        (["queue", "create", "bad name!", "--subscribe", "a/>"], ["bad name!"]),
        (["pub", "a/b", "x", "--count", "-3"], ["--count"]),
        (["pub", "a/b", "x", "--header", "nokey"], ["--header"]),
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(
    node: NodeProcess, args: list[str], needles: list[str]
) -> None:
    assert_one_line_error(plexus(node, *args), *needles)


def test_duplicate_queue_create_is_refused(node: NodeProcess) -> None:
    assert plexus(node, "queue", "create", "dup", "--subscribe", "a/>").returncode == 0
    proc = plexus(node, "queue", "create", "dup", "--subscribe", "a/>")
    assert_one_line_error(proc, "'dup' already exists")
    assert proc.returncode == 1


def test_full_queue_refusal_is_one_line(node: NodeProcess) -> None:
    create = ["queue", "create", "tiny", "--subscribe", "t/>", "--max-depth", "2"]
    assert plexus(node, *create).returncode == 0
    proc = plexus(node, "pub", "t/x", "p", "--count", "5", "--guaranteed")
    assert_one_line_error(proc, "full")


def test_server_without_port_is_a_usage_error() -> None:
    proc = subprocess.run(
        [*PLEXUS, "pub", "a/b", "x", "--server", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "--server", "HOST:PORT")


def test_node_run_passes_everything_to_the_node() -> None:
    proc = subprocess.run(
        [*PLEXUS, "node", "run", "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0
    assert "--listen" in proc.stdout and "--data" in proc.stdout


def test_demo_runs_a_local_cluster_and_stops_it() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "plexus.demo"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 15
    assert "eu received" in proc.stdout and "ap consumed" in proc.stdout
    assert "sa received" in proc.stdout and "cluster stopped" in proc.stdout
    assert "ap answered 200 durable" in proc.stdout
    assert "eu received sensors/ap/t1 '21.5' from ap" in proc.stdout


@pytest.mark.slow
def test_demo_integration_runs_the_connectors_example_and_cleans_up() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "plexus.demo_integration"],
        capture_output=True, text=True, timeout=80, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 60
    out = proc.stdout
    assert out.count("replica.orders equals shop.orders") == 2
    assert "webhook received 8 signed POSTs" in out
    assert "orders-sa.jsonl has insert 4, insert 5, update 2" in out
    assert "counters untouched" in out and "state deleted" in out
    # Its temporary directory (state, PostgreSQL, connector files) is gone, and with it
    # every process that ran from it: nodes, connectors, the server.
    root = re.search(r"(/\S+/plexus-demo-[^/\s]+)/", out)
    assert root is not None, out
    assert not Path(root[1]).exists()
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if root[1] in _cmdline(p)]
    assert left == []


def _cmdline(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:  # the process ended meanwhile
        return ""
