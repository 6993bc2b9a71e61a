"""Operator logs of a node: one line per notable event, as text (the default) or JSON.

Notable events carry structured fields through `extra=` (`event`, `region`,
`peer`, `reason`, `queue`, ...): the JSON format writes them as keys of the
line's object; the text format has them in the message already.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, get_args

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, log_format: LogFormat) -> None:
    """Send every log line of the node to stderr, at `level` and up, in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",  # ISO 8601, UTC, from the record's creation time
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
