"""Shared fixtures for the admission tests: recorded reviews, a cluster view, pod validation, an ASGI client.

Why it exists: every admission test needs the same few things — the
AdmissionReviews a real kube-apiserver v1.28 sent, the namespaces and
SecretProviderClasses it held, a way to apply a returned JSONPatch and check
the result against the Kubernetes OpenAPI schema (strict), and a client for the
app without a network. Helpers are fixtures (not imports) so they never clash
with other directories' conftest modules.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import jsonpatch
import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from tests.support.kubeapi import FakeKubeAPI
from tests.support.paths import FIXTURES
from webhook.policy.memo import clear_caches
from webhook.policy.view import StaticView
from webhook.settings import Settings

ADMISSION = FIXTURES / "admission"
# The newest Kubernetes schema the installed kubernetes-validate ships.
K8S_VERSION = kubernetes_validate.latest_version()


def load_review(name: str) -> dict[str, Any]:
    matches = sorted(ADMISSION.glob(f"{name}*.json"))
    assert len(matches) == 1, f"no single recorded review named {name}: {matches}"
    review = json.loads(matches[0].read_text())
    assert isinstance(review, dict)
    return review


def fixture_namespaces() -> list[dict[str, Any]]:
    items = json.loads((FIXTURES / "namespaces-list.json").read_text())["items"]
    assert isinstance(items, list)
    return items


def fixture_spcs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((FIXTURES / "secretproviderclasses.yaml").read_text()) if doc]


class CountingView:
    """A StaticView that counts lookups (to show admission only reads the in-memory view)."""

    def __init__(self, view: StaticView) -> None:
        self.view = view
        self.lookups = 0
        self.ready = True

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        self.lookups += 1
        return self.view.namespace(name)

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.lookups += 1
        return self.view.secret_provider_class(namespace, name)

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        self.lookups += 1
        return self.view.limit_ranges(namespace)

    def is_ready(self) -> bool:
        return self.ready


@pytest.fixture(autouse=True)
def _fresh_spec_cache() -> Iterator[None]:
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def cluster() -> CountingView:
    """The cluster as recorded: team-a (opted in, eu-west-1, 5m refresh) with two SPCs, team-b plain."""
    return CountingView(StaticView(fixture_spcs(), fixture_namespaces()))


@pytest.fixture
def review() -> Callable[[str], dict[str, Any]]:
    return load_review


def apply_and_validate(pod: Mapping[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a JSONPatch the way the API server does, then validate the Pod strictly."""
    patched = jsonpatch.apply_patch(pod, ops, in_place=False)
    kubernetes_validate.validate(patched, K8S_VERSION, strict=True)
    assert isinstance(patched, dict)
    return patched


@pytest.fixture
def patched_pod() -> Callable[[Mapping[str, Any], list[dict[str, Any]]], dict[str, Any]]:
    return apply_and_validate


class AsgiClient:
    """httpx against the ASGI app in-process (no sockets), on one private event loop."""

    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ferry.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture
def asgi_client() -> Iterator[Callable[[Any], AsgiClient]]:
    clients: list[AsgiClient] = []

    def make(app: Any) -> AsgiClient:
        client = AsgiClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    """A kube-apiserver on loopback serving the recorded responses."""
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def api(fake: FakeKubeAPI) -> Iterator[kubernetes.client.ApiClient]:
    """A Kubernetes client pointed at `fake`."""
    with fake.api_client() as client:
        yield client
