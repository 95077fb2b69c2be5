"""The lean AWS client (issue 16): signing, endpoints, egress, retries and identities, each against a real part.

Signing and endpoints are compared with botocore (installed for development);
egress goes through a real CONNECT proxy to a real TLS server; identities and
retries run against moto or a loopback stub over HTTP.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from fetcher.aws import AwsClients, AwsSettings
from fetcher.awscreds import CredentialCache, container_uri_problem
from fetcher.awsendpoints import EndpointError, EndpointRules, standard_url
from fetcher.awswire import CredentialRetrievalError
from fetcher.contract.regions import KNOWN_REGIONS
from fetcher.errors import AwsRejectedError, AwsUnavailableError, ObjectErrors
from fetcher.sigv4 import Credentials, sign
from fetcher.sources import fetch_all
from fetcher.transport import Backoff, with_retries
from tests.support.aws import (
    PRIMARY,
    LocalHttpStub,
    RecordedRequest,
    Reply,
    Seeder,
    aws_json_error,
    fast_session,
    make_spec,
)
from tests.support.connectproxy import ConnectProxy, TlsStub

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]
SM_HOST = "secretsmanager.us-east-1.amazonaws.com"
SECRET_REPLY = {"Name": "db", "VersionId": "v1", "SecretString": "over tls", "VersionStages": ["AWSCURRENT"]}


def secret_spec() -> Any:
    return make_spec([{"objectName": "db", "objectType": "secretsmanager"}])


def bare_env(**extra: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", **extra}


def json_reply(body: Mapping[str, Any]) -> Reply:
    return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(body).encode()


# --- Signing. --------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "session-token"])
def test_the_signature_is_botocores_byte_for_byte(token: str | None) -> None:
    now = datetime(2026, 12, 6, 11, 0, 0, tzinfo=UTC)
    body = b'{"SecretId":"app/db"}'
    headers = {"content-type": "application/x-amz-json-1.1", "x-amz-target": "secretsmanager.GetSecretValue"}
    ours = sign(
        method="POST",
        host=SM_HOST,
        path="/",
        headers=headers,
        body=body,
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token),
        region="us-east-1",
        service="secretsmanager",
        now=now,
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    request = AWSRequest(method="POST", url=f"https://{SM_HOST}/", data=body, headers=dict(headers))
    request.context["timestamp"] = stamp
    request.headers["X-Amz-Date"] = stamp
    if token:
        request.headers["X-Amz-Security-Token"] = token
    signer = SigV4Auth(BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token), "secretsmanager", "us-east-1")
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert ours["authorization"].endswith(f"Signature={expected}")
    assert signer.signed_headers(signer.headers_to_sign(request)) in ours["authorization"]
    assert ours.get("x-amz-security-token") == token


# --- Endpoints. --------------------------------------------------------------------------------------


def test_standard_endpoints_equal_botocores_in_every_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.config import Config

    for key in ("AWS_ENDPOINT_URL", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)

    regions = [*KNOWN_REGIONS["aws"][:3], *[r for p, rs in KNOWN_REGIONS.items() if p != "aws" for r in rs]]
    session = fast_session(aws_access_key_id="a", aws_secret_access_key="b")
    differences = []
    for region in regions:
        for fips in (False, True):
            for dualstack in (False, True):
                for service in ("secretsmanager", "ssm", "sts"):
                    config = Config(use_fips_endpoint=fips, use_dualstack_endpoint=dualstack)
                    try:
                        expected = session.client(service, region_name=region, config=config).meta.endpoint_url
                    except Exception as exc:  # noqa: BLE001 - botocore says this variant does not exist
                        expected = type(exc).__name__
                    try:
                        ours = standard_url(service, region, fips=fips, dualstack=dualstack)
                    except EndpointError as exc:
                        ours = exc.code
                    if ours != expected:
                        differences.append((region, fips, dualstack, service, ours, expected))
    assert differences == []


def test_endpoint_settings_in_order_of_precedence() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://all:1",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://sm:2",
        "AWS_ENDPOINT_URL_STS": "http://sts:3",
        "FERRY_ENDPOINT_URL_EU_WEST_1": "http://ferry:4/",
        "AWS_USE_FIPS_ENDPOINT": "true",
    }
    rules = EndpointRules.from_env(env)
    assert rules.url("secretsmanager", "us-east-1") == "http://sm:2"
    assert rules.url("ssm", "us-east-1") == "http://all:1"
    assert rules.url("sts", "us-east-1") == "http://sts:3"
    assert rules.url("ssm", "eu-west-1") == "http://ferry:4"  # Ferry's per-region override wins
    assert rules.url("sts", "eu-west-1") == "http://sts:3"  # ... for the secrets' services only
    ignored = EndpointRules.from_env({**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    assert ignored.url("ssm", "us-east-1") == "https://ssm-fips.us-east-1.amazonaws.com"
    assert ignored.url("sts", "cn-north-1") == "https://sts-fips.cn-north-1.amazonaws.com.cn"


# --- Egress: a CONNECT proxy, a private CA. ---------------------------------------------------------------


@pytest.fixture
def tls_aws(tmp_path: Path) -> Iterator[TlsStub]:
    stub = TlsStub(lambda request: json_reply(SECRET_REPLY), [SM_HOST, "localhost"], tmp_path)
    yield stub
    stub.close()


def test_https_proxy_tunnels_to_the_standard_hostname_with_the_ca_bundle(tls_aws: TlsStub) -> None:
    proxy = ConnectProxy({SM_HOST: tls_aws.port})
    try:
        proxy_url = proxy.url.replace("http://", "http://user:p%40ss@")
        env = bare_env(HTTPS_PROXY=proxy_url, AWS_CA_BUNDLE=str(tls_aws.ca_file))
        clients = AwsClients(AwsSettings(max_attempts=1), env)
        values = fetch_all(secret_spec(), clients)
        clients.close()
    finally:
        proxy.close()
    assert values[0].data == b"over tls"
    assert proxy.tunnels == [f"CONNECT {SM_HOST}:443"]
    assert proxy.auth == ["Basic dXNlcjpwQHNz"]  # user:p@ss
    assert tls_aws.stub.requests[0].headers["host"] == SM_HOST  # signed for the real name, not the proxy


def test_no_proxy_bypasses_the_proxy(tls_aws: TlsStub) -> None:
    proxy = ConnectProxy({})
    try:
        env = bare_env(
            HTTPS_PROXY=proxy.url,
            NO_PROXY="example.com,.localhost,localhost",
            AWS_ENDPOINT_URL=f"https://localhost:{tls_aws.port}",
            AWS_CA_BUNDLE=str(tls_aws.ca_file),
        )
        clients = AwsClients(AwsSettings(max_attempts=1), env)
        assert fetch_all(secret_spec(), clients)[0].data == b"over tls"
        clients.close()
    finally:
        proxy.close()
    assert proxy.tunnels == []


def test_an_untrusted_certificate_fails_once_with_a_bounded_message(tls_aws: TlsStub) -> None:
    env = bare_env(AWS_ENDPOINT_URL=f"https://localhost:{tls_aws.port}")  # no AWS_CA_BUNDLE
    clients = AwsClients(AwsSettings(max_attempts=3), env)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(secret_spec(), clients)
    clients.close()
    (error,) = caught.value.errors
    assert isinstance(error, AwsUnavailableError) and error.code == "SSLError"
    assert "AWS_CA_BUNDLE" in str(error) and len(str(error)) < 600
    assert len(tls_aws.stub.requests) == 0 and clients.calls.attempts() == 1  # a bad certificate is not retried


def test_irsa_asks_the_regional_sts_endpoint(tmp_path: Path) -> None:
    """Through the proxy we see where the exchange goes: sts.<region>, never the global sts.amazonaws.com."""
    proxy = ConnectProxy({})
    token = tmp_path / "token"
    token.write_text("eyJ.token.sig")
    env = {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/app",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_REGION": "eu-central-1",
        "HTTPS_PROXY": proxy.url,
    }
    clients = AwsClients(AwsSettings(max_attempts=1), env)
    try:
        with pytest.raises(ObjectErrors) as caught:
            fetch_all(make_spec([{"objectName": "db", "objectType": "secretsmanager"}], region="eu-central-1"), clients)
    finally:
        clients.close()
        proxy.close()
    assert proxy.tunnels == ["CONNECT sts.eu-central-1.amazonaws.com:443"]
    assert caught.value.errors[0].code == "ProxyConnectionError"


# --- Retries. ------------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_and_bounded_in_attempts_and_time() -> None:
    backoff = Backoff(max_attempts=6, base=0.5, cap=2.0, budget=3.0)
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    def always_throttled() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        with_retries(always_throttled, lambda exc: True, backoff, sleep=sleep, clock=lambda: clock[0], rng=lambda: 1.0)
    assert slept == [0.5, 1.0]  # 0.5, 1, then 2 would pass the 3 s budget: stop before sleeping it
    slept.clear()
    clock[0] = 0.0
    with pytest.raises(TimeoutError):
        with_retries(always_throttled, lambda exc: True, backoff, sleep=sleep, clock=lambda: clock[0], rng=lambda: 0.1)
    assert len(slept) == 5 and max(slept) <= 0.2  # six attempts; each delay a fraction of the capped exponent
    assert backoff.delay(10, rng=lambda: 1.0) == 2.0  # the cap


@pytest.mark.parametrize(
    ("reply", "attempts", "error_class"),
    [
        (aws_json_error(400, "ThrottlingException", "slow down"), 3, AwsUnavailableError),
        (aws_json_error(503, "ServiceUnavailable", "down"), 3, AwsUnavailableError),
        (aws_json_error(400, "AccessDeniedException", "no"), 1, AwsRejectedError),
    ],
    ids=["throttled", "503", "denied"],
)
def test_throttling_and_5xx_are_retried_and_denial_is_not(
    http_stub: StubFactory, reply: Reply, attempts: int, error_class: type
) -> None:
    stub = http_stub(lambda request: reply)
    clients = AwsClients(AwsSettings(max_attempts=3, endpoint_overrides={PRIMARY: stub.url}), bare_env())
    object.__setattr__(clients.backoff, "base", 0.01)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(secret_spec(), clients)
    clients.close()
    assert len(stub.requests) == attempts
    (error,) = caught.value.errors
    assert isinstance(error, error_class) and error.region == PRIMARY and error.object_name == "db"


# --- Identities. ----------------------------------------------------------------------------------------


def pod_identity_agent(http_stub: StubFactory, lifetime: float) -> LocalHttpStub:
    def reply(request: RecordedRequest) -> Reply:
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + lifetime))
        body = {"AccessKeyId": f"ASIA{len(stub.requests):016d}", "SecretAccessKey": "s", "Token": "t"}
        return 200, {"Content-Type": "application/json"}, json.dumps({**body, "Expiration": expiration}).encode()

    stub = http_stub(reply)
    return stub


def test_pod_identity_rereads_its_token_and_renews_before_expiry(http_stub: StubFactory, tmp_path: Path) -> None:
    agent = pod_identity_agent(http_stub, lifetime=3600)
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("token-1")
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{agent.url}/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token),
    }
    clients = AwsClients(AwsSettings(max_attempts=1), env)
    now = [time.time()]
    cache = CredentialCache(clients.credentials._fetch, clock=lambda: now[0])
    first = cache.get(PRIMARY)
    assert cache.get(PRIMARY) is first  # fresh keys are reused, the agent is not asked again
    token.write_text("token-2")  # the kubelet rotated the projected token
    now[0] += 3600 - 10 * 60  # ten minutes before expiry: renewed early
    second = cache.get(PRIMARY)
    clients.close()
    assert second.access_key != first.access_key
    assert [request.headers["authorization"] for request in agent.requests] == ["token-1", "token-2"]


def test_a_failed_renewal_keeps_keys_that_still_work(http_stub: StubFactory) -> None:
    keys = [Credentials("ASIAOLD", "s", "t", expires=1000.0)]

    def fetch(region: str) -> Credentials:
        if keys:
            return keys.pop()
        raise CredentialRetrievalError("agent down")

    now = [0.0]
    cache = CredentialCache(fetch, clock=lambda: now[0])
    old = cache.get(PRIMARY)
    now[0] = 500.0  # inside the renewal window, 500 s of life left
    assert cache.get(PRIMARY) is old
    now[0] = 990.0  # 10 s left: not enough to sign with
    with pytest.raises(CredentialRetrievalError):
        cache.get(PRIMARY)


def test_irsa_renews_with_sts_in_a_long_lived_sidecar(seed: Seeder, tmp_path: Path, moto: Any) -> None:
    seed.secret("db", "via irsa")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.sig")
    env = {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/app",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_ENDPOINT_URL": moto.url,
    }
    clients = AwsClients(AwsSettings(max_attempts=1), env)
    now = [time.time()]
    clients.credentials = CredentialCache(clients.credentials._fetch, clock=lambda: now[0])
    try:
        assert fetch_all(secret_spec(), clients)[0].data == b"via irsa"
        fetch_all(secret_spec(), clients)
        assert clients.calls.count("AssumeRoleWithWebIdentity", service="sts", region=PRIMARY) == 1
        now[0] += 7 * 24 * 3600  # a week later: the keys have long expired, the sidecar renews them
        assert fetch_all(secret_spec(), clients)[0].data == b"via irsa"
    finally:
        clients.close()
    assert clients.calls.count("AssumeRoleWithWebIdentity", service="sts") == 2


def test_static_keys_with_a_session_token_are_signed(http_stub: StubFactory) -> None:
    stub = http_stub(lambda request: json_reply(SECRET_REPLY))
    env = bare_env(AWS_SESSION_TOKEN="session-token")
    clients = AwsClients(AwsSettings(max_attempts=1, endpoint_overrides={PRIMARY: stub.url}), env)
    fetch_all(secret_spec(), clients)
    clients.close()
    headers = stub.requests[0].headers
    assert headers["x-amz-security-token"] == "session-token"
    assert "Credential=AKIDEXAMPLE/" in headers["authorization"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://169.254.170.23/v1/credentials", True),
        ("http://127.0.0.1:2000/creds", True),
        ("https://agent.example.com/creds", True),
        ("http://10.0.0.5/creds", False),
        ("http://attacker.example.com/creds", False),
        ("file:///etc/passwd", False),
    ],
)
def test_the_container_token_goes_only_to_the_agent_or_over_https(url: str, allowed: bool) -> None:
    assert (container_uri_problem(url) is None) is allowed


def test_a_refused_container_uri_is_a_clear_identity_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("never-sent")
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://10.0.0.5/creds",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token),
    }
    clients = AwsClients(AwsSettings(max_attempts=1, endpoint_overrides={PRIMARY: "http://127.0.0.1:9"}), env)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(secret_spec(), clients)
    clients.close()
    message = str(caught.value)
    assert "CredentialRetrievalError" in message and "the pod has no usable AWS identity" in message
    assert "never-sent" not in message


def test_system_cas_in_a_hashed_directory_are_read_on_demand(
    tls_aws: TlsStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No AWS_CA_BUNDLE: the trust store is a c_rehash directory (as Debian ships it), looked up lazily."""
    store = tmp_path / "certs"
    store.mkdir()
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(tls_aws.ca_file)], capture_output=True, text=True, check=True
    ).stdout.strip()
    (store / f"{subject_hash}.0").symlink_to(tls_aws.ca_file)
    monkeypatch.setenv("SSL_CERT_DIR", str(store))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-bundle-file"))
    env = bare_env(AWS_ENDPOINT_URL=f"https://localhost:{tls_aws.port}")
    clients = AwsClients(AwsSettings(max_attempts=1), env)
    try:
        assert fetch_all(secret_spec(), clients)[0].data == b"over tls"
    finally:
        clients.close()
    (store / f"{subject_hash}.0").unlink()  # without the CA in the store, the same call fails verification
    clients = AwsClients(AwsSettings(max_attempts=1), env)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(secret_spec(), clients)
    clients.close()
    assert caught.value.errors[0].code == "SSLError"


# --- A hostile or broken endpoint. ---------------------------------------------------------------------


class RawServer:
    """Answers every connection with the same raw bytes, then closes: replies no HTTP library would send."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    connection.recv(65536)
                    connection.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{}", "ReplyTooLargeError"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n", "ConnectionClosedError"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 5000 + b"\r\n", "ConnectionClosedError"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"ffffff\r\n" + b"a" * 70_000,
            "ReplyTooLargeError",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", "ConnectionClosedError"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "ConnectionClosedError"),
        (b"", "ConnectionClosedError"),
    ],
    ids=["huge-length", "long-line", "many-headers", "huge-chunk", "short-chunk", "not-http", "nothing"],
)
def test_a_broken_endpoint_gets_a_bounded_error_not_a_hang_or_a_crash(answer: bytes, code: str) -> None:
    server = RawServer(answer)
    clients = AwsClients(
        AwsSettings(max_attempts=1, read_timeout=2, endpoint_overrides={PRIMARY: server.url}), bare_env()
    )
    try:
        started = time.monotonic()
        with pytest.raises(ObjectErrors) as caught:
            fetch_all(secret_spec(), clients)
    finally:
        clients.close()
        server.close()
    (error,) = caught.value.errors
    assert error.code == code and time.monotonic() - started < 10
    assert len(str(error)) < 800
