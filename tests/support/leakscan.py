"""A ledger of every secret value the reliability tests store, and a scanner for where they must never appear.

Why it exists: Ferry promises that secret values never appear in logs, events,
metrics, env vars, termination messages or the pod spec. Checking that in one
test proves little, because a leak usually hides in an error path (a JSON parse
error quoting the value, a debug log of a response body). So every test in this
suite stores values through `SecretLedger.remember`, hands everything a user
or operator could read to `SecretLedger.expose`, and the session ends with a
rescan of all exposures against all values (a value stored by one test might
leak into output captured by another, e.g. a shared server log).

A value is searched for as-is, base64-encoded, JSON-escaped and, for values
long enough to be distinctive, by its unique token, so a value cut by a message
truncation or re-quoting is still found.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field

# Values shorter than this are not searched on their own (they would match by chance).
MIN_DISTINCTIVE = 12
TOKEN_RE = re.compile(r"ferrysecret[0-9a-f]{16}")


def new_secret_value(kind: str = "plain") -> str:
    """A value that cannot occur by chance: it embeds a unique token the scanner also looks for."""
    token = f"ferrysecret{uuid.uuid4().hex[:16]}"
    if kind == "json":
        return json.dumps({"username": f"user-{token}", "password": f"pw-{token}", "port": 5432})
    return f"value-{token}-end"


@dataclass(frozen=True)
class Leak:
    where: str
    needle: str
    context: str

    def __str__(self) -> str:
        return f"secret leaked into {self.where}: ...{self.context}..."


@dataclass
class SecretLedger:
    values: set[str] = field(default_factory=set)
    exposures: list[tuple[str, str]] = field(default_factory=list)
    exposed_bytes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def remember(self, value: str) -> str:
        with self._lock:
            self.values.add(value)
        return value

    def needles(self) -> set[str]:
        with self._lock:
            values = set(self.values)
        found: set[str] = set()
        for value in values:
            if len(value) >= MIN_DISTINCTIVE:
                found.add(value)
                found.add(base64.b64encode(value.encode()).decode())
                found.add(json.dumps(value)[1:-1])
            found.update(TOKEN_RE.findall(value))
        return found

    def scan(self, where: str, text: str | bytes) -> list[Leak]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        leaks = []
        for needle in self.needles():
            position = text.find(needle)
            if position >= 0:
                leaks.append(Leak(where, needle, text[max(0, position - 60) : position + len(needle) + 20]))
        return leaks

    def expose(self, where: str, text: str | bytes) -> None:
        """Record something a user or operator can read; fail now if it holds a known value."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        with self._lock:
            self.exposures.append((where, text))
            self.exposed_bytes += len(text)
        leaks = self.scan(where, text)
        assert not leaks, "\n".join(str(leak) for leak in leaks)

    def rescan_all(self) -> list[Leak]:
        with self._lock:
            exposures = list(self.exposures)
        leaks: list[Leak] = []
        for where, text in exposures:
            leaks.extend(self.scan(where, text))
        return leaks

    def summary(self) -> dict[str, int]:
        with self._lock:
            kinds = {where.split(":")[0] for where, _ in self.exposures}
            return {
                "secret_values": len(self.values),
                "exposures": len(self.exposures),
                "exposure_kinds": len(kinds),
                "bytes_scanned": self.exposed_bytes,
            }


class LogCollector:
    """A logging handler that keeps every formatted record (with tracebacks) for the scan."""

    def __init__(self) -> None:
        import logging

        self.lines: list[str] = []
        self._lock = threading.Lock()
        collector = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    text = self.format(record)
                except Exception:  # a broken log call must not break the test that made it
                    text = f"{record.name}: {record.msg!r} {record.args!r}"
                with collector._lock:
                    collector.lines.append(text)

        self.handler = _Handler(level=logging.DEBUG)
        self.handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)
