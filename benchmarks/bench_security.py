"""What TLS and tokens cost: the same runs with security off and on (issue 11).

Direct throughput (1 publisher -> 1 subscriber, separate processes),
guaranteed end to end (publish -> queue -> consumer ack) and direct latency at
a fixed rate, each run RUNS times with the node plaintext and open, and RUNS
times with TLS on every connection and a token checked on every call and
event (the same node, a CA and a signing key made for the run; clients
present the CA and a token limited to the benchmark's topics and queue).
Runs alternate off/on so a change in the machine's load hits both.

Targets (issue 11): at least 80 % of the throughput, direct p50 latency
within +0.1 ms.

    .venv/bin/python benchmarks/bench_security.py
"""

from __future__ import annotations

from typing import Any

import bench_latency
import bench_throughput
from common import figure, median_row

RUNS = 3
DIRECT_EVENTS = 300_000
GUARANTEED_EVENTS = 60_000
THROUGHPUT_SHARE = 0.8
P50_EXTRA_MS = 0.1


def _alternating(run: Any, runs: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    off, on = [], []
    for _ in range(runs):
        off.append(run(False))
        on.append(run(True))
    return off, on


def _throughput_rows(measure: str, off: list[dict], on: list[dict]) -> list[dict[str, Any]]:
    plain, secured = median_row(off, "end_to_end"), median_row(on, "end_to_end")
    share = secured["end_to_end"] / plain["end_to_end"] if plain["end_to_end"] else 0.0
    detail = {
        "runs_off": plain["runs"],
        "runs_on": secured["runs"],
        "node_cpu_off_on": f"{plain['node_cpu']}, {secured['node_cpu']}",
    }
    return [
        figure("security", f"{measure}, security off", plain["end_to_end"], "events/s", **detail),
        figure("security", f"{measure}, TLS + tokens", secured["end_to_end"], "events/s", **detail),
        figure("security", f"{measure}, share kept", share, "ratio", target=THROUGHPUT_SHARE,
               **detail),
    ]  # fmt: skip


def _latency_rows(off: list[dict], on: list[dict]) -> list[dict[str, Any]]:
    plain, secured = median_row(off, "p50"), median_row(on, "p50")
    detail = {
        "p50_runs_off": ", ".join(f"{r['p50']:.3f}" for r in off),
        "p50_runs_on": ", ".join(f"{r['p50']:.3f}" for r in on),
        "rate_per_s": bench_latency.RATE,
    }
    extra = secured["p50"] - plain["p50"]
    return [
        figure("security", "direct latency p50, security off", plain["p50"], "ms",
               higher_is_better=False, **detail),
        figure("security", "direct latency p50, TLS + tokens", secured["p50"], "ms",
               higher_is_better=False, **detail),
        figure("security", "direct latency p50, added by security", extra, "ms",
               target=P50_EXTRA_MS, higher_is_better=False, **detail),
        figure("security", "direct latency p99, security off / on",
               median_row(off, "p99")["p99"], "ms", higher_is_better=False,
               p99_on=round(median_row(on, "p99")["p99"], 3)),
    ]  # fmt: skip


def run(runs: int = RUNS) -> list[dict[str, Any]]:
    direct = _alternating(
        lambda secure: bench_throughput.direct_run(
            DIRECT_EVENTS, 1, 1, f"security-direct-{secure}", secure=secure
        ),
        runs,
    )
    guaranteed = _alternating(
        lambda secure: bench_throughput.guaranteed_run(GUARANTEED_EVENTS, secure=secure), runs
    )
    latency = _alternating(lambda secure: bench_latency.direct_run(secure=secure), runs)
    return [
        *_throughput_rows("direct 1 pub → 1 sub", *direct),
        *_throughput_rows("guaranteed pub → queue → ack", *guaranteed),
        *_latency_rows(*latency),
    ]


if __name__ == "__main__":
    from run_all import main

    main(["--only", "security"])
