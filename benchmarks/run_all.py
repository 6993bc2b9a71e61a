"""`make bench`: run every benchmark, print one table per benchmark and a summary.

Each module under benchmarks/ named here has `run() -> list[dict]`; a row with
a `target` is a figure from an issue (2: one node, 4: local clusters, 5: plexus top) and goes
in the summary too.

    .venv/bin/python benchmarks/run_all.py [--only NAME ...] [--markdown FILE] [--profile DIR]

`--markdown FILE` writes the machine, the tables and the summary as markdown:
between the lines `<!-- bench:begin -->` and `<!-- bench:end -->` when FILE
has them (so docs/benchmarks.md keeps its prose), else as the whole file.
Benchmarks measure; they never fail on a figure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PROFILE_ENV, figure, fmt_number, load, machine
from rich.console import Console
from rich.table import Table

# name -> (module, title); run in this order.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "index": ("bench_index", "Subscription index (plexus.topics), in-process"),
    "throughput": ("bench_throughput", "Throughput, node + SDK clients as separate processes"),
    "floor": ("bench_floor", "The transport's floor: bare grpc.aio streams, same processes/hops"),
    "latency": ("bench_latency", "Latency at a fixed rate, node + SDK clients as processes"),
    "subscribe": ("bench_subscribe", "A new subscription's first event, one node and a link"),
    "drain": ("bench_drain", "A deep queue (1,000,000 events) drains as fast as a short one?"),
    "memory": ("bench_memory", "Node memory (RSS)"),
    "cluster": ("bench_cluster", "Local clusters: plexus up, region add, failover, 12 regions"),
    "tui": ("bench_tui", "plexus top: time per refresh, 12 regions, 10,000 subscriptions"),
    "reconnect": ("bench_reconnect", "Clients across a node restart; idempotent publishing's cost"),
    "listing": ("bench_listing", "Listings with 10,000 items: plexus queue list and the tables"),
    "security": ("bench_security", "TLS and tokens: the same runs with security off and on"),
    "connectors": ("bench_connectors", "Connectors: PostgreSQL commits in us to sinks in eu"),
    "edge": ("bench_edge", "MQTT and HTTP: paho clients against Plexus and Mosquitto"),
    "soak": ("bench_soak", "Soak: one node, 10 minutes of mixed load (make soak)"),
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SUMMARY_COLUMNS = ("benchmark", "measure", "value", "unit", "target", "met", "peers")
# Run only when named (`--only soak`, `make soak`): they take many minutes.
LONG = frozenset({"soak"})
# Columns of a benchmark's table; every other key goes in `detail` as k=v.
MAIN_COLUMNS = ("measure", "value", "unit", "target", "met")
# Peers are shown in the summary only.
SKIP_IN_DETAIL = frozenset({*MAIN_COLUMNS, "benchmark", "peers"})
CONSOLE_WIDTH = 160
INDEX_TARGET = 500_000


def index_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """bench_index rows (kept as they are) as figures: matches/s against the target."""
    out = []
    for row in rows:
        if row["name"].startswith("match"):
            extra = {k: v for k, v in row.items() if k not in ("benchmark", "name", "ops_per_s")}
            out.append(
                figure(
                    "index",
                    f"{row['name']}, {row['subscriptions']:,} subscriptions",
                    row["ops_per_s"],
                    "matches/s",
                    target=INDEX_TARGET,
                    **extra,
                )
            )
        else:
            rest = {k: v for k, v in row.items() if k not in ("benchmark", "name", "ops_per_s")}
            out.append({"benchmark": "index", "measure": row["name"], "value": row["ops_per_s"],
                        "unit": "ops/s", **rest})  # fmt: skip
    return out


ADAPT: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
    "index": index_figures,
}


def with_detail(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows with their extra keys folded into one `detail` cell, and the columns."""
    out = []
    for row in rows:
        main = {k: row[k] for k in MAIN_COLUMNS if k in row}
        extra = [f"{k}={fmt_number(v)}" for k, v in row.items() if k not in SKIP_IN_DETAIL]
        main["detail"] = "; ".join(extra)
        out.append(main)
    cols = [c for c in (*MAIN_COLUMNS, "detail") if any(c in r for r in out)]
    return out, cols


def rich_table(title: str, rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in cols:
        numeric = col in ("value",) or all(
            isinstance(r.get(col), int | float) for r in rows if col in r
        )
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        cells = [fmt_number(row.get(col, "")) for col in cols]
        if "met" in cols:
            i = list(cols).index("met")
            cells[i] = {"yes": "[green]yes[/green]", "no": "[red]no[/red]"}.get(cells[i], "")
        table.add_row(*cells)
    return table


def markdown_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    def cell(value: object) -> str:
        return fmt_number(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |"]
    lines.append("|" + "|".join("---:" if c == "value" else "---" for c in cols) + "|")
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def markdown(
    results: dict[str, list[dict[str, Any]]], failed: dict[str, str], started: str, seconds: float
) -> str:
    info = machine()
    parts = [
        f"Measured {started} by `make bench` (`.venv/bin/python benchmarks/run_all.py`), "
        f"{seconds:.0f} s in all.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        "### Summary against the issues' targets",
        "",
        markdown_table(summary_rows(results), SUMMARY_COLUMNS),
    ]
    for name, rows in results.items():
        parts += ["", f"### {BENCHMARKS[name][1]}", "", markdown_table(*with_detail(rows))]
    for name, error in failed.items():
        parts += ["", f"### {BENCHMARKS[name][1]}", "", f"Did not run: {error}"]
    return "\n".join(parts) + "\n"


def summary_rows(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for rows in results.values() for row in rows if "target" in row]


def write_markdown(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = f"{head}{BEGIN}\n{text}{END}{tail}"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Plexus benchmarks.")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--markdown", type=Path, help="write the tables as markdown to FILE")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles (collapsed stacks) of the node and clients into DIR",
    )
    args = parser.parse_args(argv)
    if args.profile:
        os.environ[PROFILE_ENV] = str(args.profile.resolve())

    console = Console()
    if not console.is_terminal:
        console = Console(width=CONSOLE_WIDTH)
    info = machine()
    console.print(", ".join(f"{k}: {v}" for k, v in info.items()), style="dim")
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    results: dict[str, list[dict[str, Any]]] = {}
    # A benchmark that cannot run (a missing tool names its package) is reported and the
    # rest still run and are written: minutes of figures are not lost to the last one.
    failed: dict[str, str] = {}
    for name in args.only or [n for n in BENCHMARKS if n not in LONG]:
        module_name, title = BENCHMARKS[name]
        console.print(f"[bold]{name}[/bold]: running (load average {load()}) ...", style="dim")
        t = time.monotonic()
        try:
            rows = importlib.import_module(module_name).run()
        except Exception as exc:  # any failure of one benchmark
            failed[name] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{name} failed:[/red] {failed[name]}")
            continue
        rows = ADAPT.get(name, lambda r: r)(rows)
        results[name] = rows
        title = f"{title} ({time.monotonic() - t:.0f} s)"
        console.print(rich_table(title, *with_detail(rows)))
    summary = summary_rows(results)
    if summary:
        console.print(rich_table("Summary against the issues' targets", summary, SUMMARY_COLUMNS))
    seconds = time.monotonic() - t0
    console.print(f"done in {seconds:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.markdown:
        write_markdown(args.markdown, markdown(results, failed, started, seconds))
        console.print(f"wrote {args.markdown}")
    if failed:
        console.print(f"[red]{len(failed)} benchmark(s) failed:[/red] {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
