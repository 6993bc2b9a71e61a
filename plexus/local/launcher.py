"""Node processes of a local cluster: the start command, starting detached, readiness, stopping.

`node_command` is the one place that says how a region's node is started; a
later membership layer adds its flags there (e.g. a Raft address to join).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plexus.local.private import open_private, private_dir

__all__ = [
    "READY_LINE",
    "NodeFailed",
    "Started",
    "find_processes",
    "is_running",
    "kill_now",
    "node_command",
    "start_node",
    "stop_processes",
    "wait_listening",
]

# What a node prints on stdout once it serves (node/server.py).
READY_LINE = " listening on "
POLL_S = 0.02


def node_command(cluster_file: Path, region: str, extra: Sequence[str] = ()) -> list[str]:
    """The command line of region `region`'s node; it names `cluster_file` (in the state dir)."""
    return [
        sys.executable,
        "-m",
        "node",
        "run",
        "--cluster",
        str(cluster_file),
        "--region",
        region,
        *extra,
    ]


@dataclass
class Started:
    """A node this process started: its Popen (to reap it) and where its log began."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_offset: int

    @property
    def pid(self) -> int:
        return self.process.pid


class NodeFailed(Exception):
    """A node exited (or never served) while starting; `line` is its error, one line."""

    def __init__(self, name: str, line: str) -> None:
        self.name, self.line = name, line
        super().__init__(f"region {name}: {line}")


def start_node(name: str, command: list[str], log: Path, cwd: Path) -> Started:
    """Start a node detached: own session, stdin from /dev/null, stdout+stderr appended to `log`."""
    private_dir(log.parent)
    # A node's log may name its peers, tokens' names and errors: its owner's to read.
    with os.fdopen(open_private(log, os.O_WRONLY | os.O_APPEND), "ab") as out:
        offset = out.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    return Started(name, process, log, offset)


def wait_listening(started: Iterable[Started], deadline: float) -> None:
    """Return once every node printed that it listens; NodeFailed for one that exits or lags."""
    waiting = {s.name: s for s in started}
    while waiting:
        for name, node in list(waiting.items()):
            text = _log_since(node)
            if READY_LINE in text:
                del waiting[name]
            elif node.process.poll() is not None:
                raise NodeFailed(name, error_line(_log_since(node)) or _exit_text(node.process))
        if waiting and time.monotonic() > deadline:
            name = sorted(waiting)[0]
            raise NodeFailed(name, "did not start serving in time")
        if waiting:
            time.sleep(POLL_S)


def _log_since(node: Started) -> str:
    try:
        with open(node.log, "rb") as handle:
            handle.seek(node.log_offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _exit_text(process: subprocess.Popen[bytes]) -> str:
    code = process.returncode
    return f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"


def error_line(text: str) -> str:
    """The node's `error: ...` line (without the prefix), else its last line (a traceback's)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------ processes by pid


def is_running(pid: int | None, marker: str) -> bool:
    """Whether `pid` is alive (not a zombie) and its command line contains `marker`.

    The marker (the state directory's cluster file) guards against a reused pid.
    """
    if not pid:
        return False
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # no procfs: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    if state == ["Z"] or state == ["X"]:
        _reap(pid)
        return False
    return marker in cmdline


def find_processes(marker: str) -> list[int]:
    """Every live process whose command line contains `marker` (strays not in the record)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir() if Path("/proc/self").exists() else ():
        if entry.name.isdigit() and int(entry.name) != me and is_running(int(entry.name), marker):
            found.append(int(entry.name))
    return found


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own child (a node this process started), else nothing."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_processes(pids: Iterable[int], marker: str, grace_s: float = 10.0) -> list[int]:
    """SIGTERM each, wait up to `grace_s`, SIGKILL the rest; returns the pids SIGKILLed."""
    alive = [pid for pid in pids if is_running(pid, marker)]
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [pid for pid in alive if is_running(pid, marker)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    _wait_gone(alive, marker)
    return alive


def terminate(procs: Iterable[subprocess.Popen[Any]], grace_s: float = 10.0) -> None:
    """Processes this one started: SIGTERM each, then SIGKILL what outlived `grace_s`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_now(pid: int, marker: str) -> None:
    """kill -9, and wait until the process is gone."""
    _signal(pid, signal.SIGKILL)
    _wait_gone([pid], marker)


def _wait_gone(pids: list[int], marker: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if is_running(pid, marker)]
        if pids:
            time.sleep(POLL_S)
