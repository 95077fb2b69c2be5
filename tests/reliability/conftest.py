"""Fixtures for the reliability suite: a fault proxy in front of moto, and a session-wide secret-leak ledger.

Why it exists: every reliability test needs the same two things. Faults must
come from the wire (boto3 -> proxy -> moto), so `fault_proxy` points
``AWS_ENDPOINT_URL`` at a `FaultProxy` forwarding to the session's moto server.
And every secret value stored anywhere in the suite must be tracked, so
`ledger` is one `SecretLedger` for the whole session; its teardown rescans
every captured output (subprocess output, logs, metrics, termination messages,
pod specs) against every value stored, and captures the in-process Python
logging of Ferry's own loggers and uvicorn at DEBUG. (botocore's DEBUG log of
the test harness's own `create_secret` calls holds the values by design; what
matters is whether Ferry's code emits them, in-process or from its processes.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.leakscan import LogCollector, SecretLedger

_LEDGER = SecretLedger()
# Ferry's packages and the server it runs in; their records are scanned for secret values.
CAPTURED_LOGGERS = ("fetcher", "webhook", "ferry", "uvicorn", "uvicorn.error", "uvicorn.access")


# Figures for docs/reliability.md: section -> row label -> columns. Written at session end to
# $FERRY_RELIABILITY_SUMMARY when set (scripts/reliability_report.py sets it and renders the doc).
SUMMARY_ENV_VAR = "FERRY_RELIABILITY_SUMMARY"
_RESULTS: dict[str, dict[str, Any]] = {}


def record_result(section: str, label: str, row: Any) -> None:
    _RESULTS.setdefault(section, {})[label] = row


@pytest.fixture(scope="session", autouse=True)
def _write_summary() -> Iterator[None]:
    yield
    path = os.environ.get(SUMMARY_ENV_VAR)
    if path:
        _RESULTS["leak_scan"] = {"session": _LEDGER.summary()}
        Path(path).write_text(json.dumps(_RESULTS, indent=2, sort_keys=True, default=sorted))


@pytest.fixture(scope="session")
def ledger() -> Iterator[SecretLedger]:
    collector = LogCollector()
    # DEBUG: a value logged at any level is a leak in someone's deployment.
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collector.handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield _LEDGER
    finally:
        for logger, level in zip(loggers, previous, strict=True):
            logger.removeHandler(collector.handler)
            logger.setLevel(level)
        _LEDGER.exposures.append(("python-logging:session", collector.text()))
        leaks = _LEDGER.rescan_all()
        assert not leaks, "\n".join(str(leak) for leak in leaks[:20])


@pytest.fixture
def fault_proxy(moto, monkeypatch: pytest.MonkeyPatch, ledger: SecretLedger) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    """A FaultProxy in front of a freshly reset moto; this process's boto3 points at the proxy."""
    with FaultProxy(moto.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy
