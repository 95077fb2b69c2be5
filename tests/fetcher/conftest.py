"""Fixtures for the fetcher's tests: seeded moto, fresh fetcher clients, local HTTP stubs, a target dir.

Why it exists: each test gets the real thing on loopback (moto's server for
AWS, `LocalHttpStub` for what moto cannot do) and a fresh `AwsClients` whose
API-call counter starts at zero, so tests can assert calls per operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fetcher.aws import AwsClients
from tests.support.aws import LocalHttpStub, Responder, Seeder, make_clients
from tests.support.gcpfake import ksa_token


@pytest.fixture
def http_stub() -> Iterator[Callable[[Responder], LocalHttpStub]]:
    """Factory: start a LocalHttpStub with a responder; all are stopped after the test."""
    started: list[LocalHttpStub] = []

    def start(responder: Responder) -> LocalHttpStub:
        stub = LocalHttpStub(responder).start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()


@pytest.fixture(scope="session")
def _seeder(moto_server: Any) -> Iterator[Seeder]:
    seeder = Seeder(moto_server.url)
    yield seeder
    seeder.close()


@pytest.fixture
def seed(moto: Any, _seeder: Seeder) -> Seeder:
    """Uncounted boto3 clients on a freshly reset moto, to create secrets and parameters."""
    return _seeder


@pytest.fixture
def clients(moto: Any) -> Iterator[AwsClients]:
    """The fetcher's clients on moto: one attempt per call, short timeouts, a zeroed call counter."""
    made = make_clients()
    yield made
    made.close()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """The directory the fetcher writes into (not created: the writer creates it)."""
    return tmp_path / "secrets"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A Kubernetes ServiceAccount token of apps/web, as the kubelet projects it for the Google fake."""
    path = tmp_path / "token"
    path.write_text(ksa_token("apps", "web"))
    return path
