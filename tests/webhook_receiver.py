"""A webhook receiver for tests: a real HTTP(S) server on a free loopback port, in a thread.

It answers from a script (a status per request, in arrival order, then
`default`), records every POST, and counts the requests it holds at once.
"""

from __future__ import annotations

import collections
import http.server
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.harness import free_port

__all__ = ["HANG", "Post", "Receiver"]

HANG = -1  # a scripted answer: hold the request until the receiver closes
HANG_LIMIT_S = 20.0


@dataclass
class Post:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the receiver answered
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP(S) server on a free loopback port, in a thread."""

    tls: ssl.SSLContext | None = None
    answers: collections.deque[int] = field(default_factory=collections.deque)
    default: int = 200  # the answer once the script ran out
    answer_headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0  # a slow receiver: each request takes this long
    posts: list[Post] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.closing = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = receiver._arrived(self.headers, body)
                if status == HANG:
                    receiver.closing.wait(HANG_LIMIT_S)
                    status = 200
                elif receiver.hold_s:
                    time.sleep(receiver.hold_s)  # the receiver's own pace, not a test wait
                with receiver.lock:
                    receiver.in_flight -= 1
                self.send_response(status)
                for name, value in receiver.answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = False  # server_close() joins every handler thread
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="receiver"
        )
        self.thread.start()
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def _arrived(self, headers: Any, body: bytes) -> int:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            status = self.answers.popleft() if self.answers else self.default
            lowered = {k.lower(): v for k, v in headers.items()}
            answered = 200 if status == HANG else status
            self.posts.append(Post(lowered, body, answered, time.monotonic()))
            return status

    def confirmed_ids(self) -> collections.Counter[str]:
        return collections.Counter(p.json["id"] for p in self.posts if p.status == 200)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
