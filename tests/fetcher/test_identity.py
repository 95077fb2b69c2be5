"""Both pod identities work through the fetcher's credential sources, with no keys in the environment.

IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE; the fetcher calls STS
AssumeRoleWithWebIdentity (moto, reached through AWS_ENDPOINT_URL) and signs
with the temporary keys it returns. EKS Pod Identity:
AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE;
the container source GETs the URI with the token as Authorization
(here a local stub standing in for the Pod Identity Agent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from fetcher.aws import AwsClients
from fetcher.sources import fetch_all
from tests.support.aws import LocalHttpStub, RecordedRequest, Reply, Seeder, make_clients, make_spec

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]
ROLE_ARN = "arn:aws:iam::123456789012:role/shop-api"


def signing_keys(clients: AwsClients) -> list[str]:
    """Collects the access key id of every signed request the fetcher sends."""
    keys: list[str] = []

    def record(operation: str, headers: Mapping[str, str]) -> None:
        keys.append(headers["authorization"].split("Credential=", 1)[1].split("/", 1)[0])

    clients.on_send.append(record)
    return keys


def without_static_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


def test_irsa_web_identity_through_sts(seed: Seeder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seed.secret("db", "via irsa")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDphcGkifQ.sig")
    without_static_keys(monkeypatch)
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    clients = make_clients()
    keys = signing_keys(clients)
    try:
        values = fetch_all(make_spec([{"objectName": "db", "objectType": "secretsmanager"}]), clients)
    finally:
        clients.close()
    assert values[0].data == b"via irsa"
    assert clients.calls.count("AssumeRoleWithWebIdentity", service="sts") == 1
    (issued,) = set(keys)
    assert issued.startswith("ASIA")  # the secret was read with the role's temporary keys, not "testing"


def test_eks_pod_identity_through_the_container_provider(
    seed: Seeder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_stub: StubFactory
) -> None:
    seed.secret("db", "via pod identity")
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    credentials = {
        "AccessKeyId": "ASIAPODIDENTITYTEST1",
        "SecretAccessKey": "pod-identity-secret-key",
        "Token": "pod-identity-session-token",
        "AccountId": "123456789012",
        "Expiration": expiration,
    }
    agent = http_stub(lambda request: (200, {"Content-Type": "application/json"}, json.dumps(credentials).encode()))
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("projected-service-account-token")
    without_static_keys(monkeypatch)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{agent.url}/v1/credentials")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token))
    clients = make_clients()
    keys = signing_keys(clients)
    try:
        values = fetch_all(make_spec([{"objectName": "db", "objectType": "secretsmanager"}]), clients)
    finally:
        clients.close()
    assert values[0].data == b"via pod identity"
    assert [request.path for request in agent.requests] == ["/v1/credentials"]
    assert agent.requests[0].headers["authorization"] == "projected-service-account-token"
    assert keys == ["ASIAPODIDENTITYTEST1"]
