"""The small Kubernetes client without an API server: configuration, bounds on time, and bounded messages."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher.errors import ConfigError, KubeAPIError
from fetcher.kube import (
    KubeClient,
    KubeTarget,
    describe_request,
    forbidden_message,
    scrub_server_message,
    service_account_from_token,
)


def _jwt(claims: dict[str, object]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJl"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (no TLS handshake, no answer)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PATCH", "/api/v1/namespaces/shop/secrets/db", KubeTarget("patch", "secrets", "db", "shop")),
        ("GET", "/api/v1/namespaces/shop/secrets", KubeTarget("list", "secrets", "", "shop")),
        (
            "POST",
            "/api/v1/namespaces/shop/serviceaccounts/app/token",
            KubeTarget("create", "serviceaccounts/token", "app", "shop"),
        ),
        ("GET", "/apis/apps/v1/namespaces/shop/deployments/web", KubeTarget("get", "deployments", "web", "shop")),
        ("GET", "/api/v1/namespaces/shop", KubeTarget("get", "namespaces", "shop", "")),
    ],
)
def test_a_path_is_described_as_rbac_sees_it(method: str, path: str, expected: KubeTarget) -> None:
    assert describe_request(method, path) == expected


def test_the_service_account_is_read_from_the_tokens_subject_and_nothing_else() -> None:
    assert (
        service_account_from_token(_jwt({"sub": "system:serviceaccount:shop:web"})) == "system:serviceaccount:shop:web"
    )
    assert service_account_from_token(_jwt({"sub": "alice"})) == ""
    assert service_account_from_token("not-a-jwt") == ""
    assert service_account_from_token("a.!!!.c") == ""


def test_echoed_values_are_removed_from_server_messages_and_the_length_is_bounded() -> None:
    message = 'Secret "db" is invalid: data[.dockercfg]: Invalid value: "hunter2 \\" quoted": invalid JSON'
    scrubbed = scrub_server_message(message)
    assert "hunter2" not in scrubbed and "Invalid value: (not shown): invalid JSON" in scrubbed
    assert len(scrub_server_message("x" * 100_000)) == 300


def test_a_forbidden_message_names_verb_resource_account_and_the_commands_that_fix_it() -> None:
    text = forbidden_message(
        KubeTarget("patch", "secrets", "db", "shop"), "system:serviceaccount:shop:web", ("create", "patch")
    )
    assert 'ServiceAccount system:serviceaccount:shop:web may not patch secrets "db" in namespace shop' in text
    assert "kubectl -n shop create role ferry-web --verb=create,patch --resource=secrets --resource-name=db" in text
    assert "--serviceaccount=shop:web" in text
    assert "the pod's ServiceAccount" in forbidden_message(KubeTarget("patch", "secrets", "db", "shop"), "")


def test_in_cluster_configuration_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST is not set"):
        KubeClient.in_cluster({}, ca_file=str(tmp_path / "ca.crt"))
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_PORT must be a TCP port number"):
        KubeClient.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "https"})
    with pytest.raises(ConfigError, match=r"cannot load the Kubernetes CA from .*ca.crt"):
        KubeClient.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, ca_file=str(tmp_path / "ca.crt"))


def test_a_missing_token_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    client = KubeClient("127.0.0.1", 1, ssl.create_default_context(), str(tmp_path / "token"))
    with pytest.raises(ConfigError, match=r"cannot read the ServiceAccount token at .*token"):
        client.request("GET", "/api/v1/namespaces/shop/secrets/db")


def test_a_server_that_never_answers_fails_within_the_timeout(silent_server: int, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    client = KubeClient("127.0.0.1", silent_server, ssl.create_default_context(), str(token), timeout=0.5)

    with pytest.raises(KubeAPIError) as caught:
        client.request("GET", "/api/v1/namespaces/shop/secrets/db")

    assert caught.value.status == 0
    assert f"the Kubernetes API at 127.0.0.1:{silent_server} did not answer" in str(caught.value)
