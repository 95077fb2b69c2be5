"""One JSON object per line on stderr: what the fetcher did, never what it fetched.

A bytes field is printed as its length only, so a fetched value cannot slip into a line by accident; the
line shape lives in `fetcher.contract.logline`, shared with the webhook.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from fetcher.contract.logline import JsonFormatter, format_line

__all__ = ["LEVELS", "LOG_LEVEL_ENV_VAR", "JsonFormatter", "JsonLogger", "format_line", "log"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
LOG_LEVEL_ENV_VAR = "FERRY_LOG_LEVEL"


class JsonLogger:
    """Writes JSON lines to a stream (stderr by default, looked up at each write)."""

    def __init__(self, stream: TextIO | None = None, level: str = "info") -> None:
        self._stream = stream
        self._threshold = LEVELS[level]
        self._lock = threading.Lock()

    def set_stream(self, stream: TextIO | None) -> TextIO | None:
        """Write to `stream` from now on (None: stderr); returns the previous one."""
        previous, self._stream = self._stream, stream
        return previous

    def set_level(self, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        self._threshold = LEVELS[level]

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self._threshold

    def log(self, level: str, msg: str, **fields: object) -> None:
        if LEVELS[level] < self._threshold:
            return
        line = format_line(level, msg, fields)
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def debug(self, msg: str, **fields: object) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: object) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: object) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: object) -> None:
        self.log("error", msg, **fields)


# The fetcher's process-wide logger: a plain object, cheap to build, configured by __main__.
log = JsonLogger()
