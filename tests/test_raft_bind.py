"""The Raft port listens only on the address the cluster file gives it.

pysyncobj binds every interface unless told otherwise; a node started with its
Raft address on 127.0.0.2 must not answer on another address of the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from tests.harness import Cluster

RAFT_HOST = "127.0.0.2"  # on Linux every 127/8 address is the loopback interface


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_raft_port_listens_only_on_the_cluster_files_address(tmp_path: Path) -> None:
    # Linux routes all of 127.0.0.0/8 to lo: a second loopback address needs no setup.
    assert bindable(RAFT_HOST), f"cannot bind {RAFT_HOST}: this test needs Linux's 127.0.0.0/8"
    cluster = Cluster(tmp_path, ["us"], [], raft=True)
    port = cluster.raft_ports["us"]
    text = cluster.file.read_text()
    cluster.file.write_text(text.replace(f"127.0.0.1:{port}", f"{RAFT_HOST}:{port}"))
    cluster.start()
    try:
        assert answers(RAFT_HOST, port)
        assert not answers("127.0.0.1", port)
        wildcard = [a for a in listening_addresses(port) if a in ("0.0.0.0", "::")]
        assert not wildcard, f"Raft port {port} listens on {wildcard}"
    finally:
        cluster.close()


def bindable(host: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on `port`, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(str(ipaddress.ip_address(words)))
    return found
