"""Certificates: generation checked over real TLS, and the Secret store against the fake API server."""

from __future__ import annotations

import base64
import copy
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.kubeapi import FIXTURES, FakeKubeAPI
from tests.support.tlsserver import TLSServer
from webhook.tls.certs import (
    CertBundle,
    generate_bundle,
    load_bundle,
    rotation_reasons,
    service_dns_names,
    write_bundle,
)
from webhook.tls.certstore import CertStoreError, ensure_cluster_bundle, patch_ca_bundle

NAMESPACE = "ferry-system"
SECRET = "ferry-webhook-tls"
SECRET_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}"
DNS = service_dns_names("ferry-webhook", NAMESPACE)
MWC_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def trusting(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    return context


def handshake(url_port: int, ca_pem: bytes, server_hostname: str) -> bytes:
    """Connect to 127.0.0.1:port presenting `server_hostname`; return the served certificate (DER)."""
    with socket.create_connection(("127.0.0.1", url_port), timeout=10) as sock:
        with trusting(ca_pem).wrap_socket(sock, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der


def leaf(bundle: CertBundle) -> x509.Certificate:
    return x509.load_pem_x509_certificate(bundle.cert_pem)


# -- generation ------------------------------------------------------------------


def test_service_dns_names() -> None:
    assert service_dns_names("ferry-webhook", "ferry-system") == [
        "ferry-webhook",
        "ferry-webhook.ferry-system",
        "ferry-webhook.ferry-system.svc",
        "ferry-webhook.ferry-system.svc.cluster.local",
    ]


def test_generated_certificate_has_sans_eku_and_verifies_against_its_ca() -> None:
    bundle = generate_bundle(DNS, ip_addresses=["127.0.0.1"])
    cert = leaf(bundle)
    (ca,) = x509.load_pem_x509_certificates(bundle.ca_pem)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == DNS
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"
    assert rotation_reasons(bundle, DNS) == []
    assert "ca_key_pem" not in repr(bundle)


def test_generated_certificate_is_trusted_over_real_tls(tmp_path: Path) -> None:
    bundle = generate_bundle([*DNS, "localhost"], ip_addresses=["127.0.0.1"])
    cert_file, key_file, ca_file = write_bundle(bundle, tmp_path / "tls")
    with TLSServer(hello_app, cert_file, key_file) as server:
        with httpx.Client(verify=trusting(ca_file.read_bytes())) as client:
            response = client.get(server.url + "/")
        assert response.status_code == 200 and response.text == "hello"
        # Each Service name the API server may use is in the certificate.
        for name in DNS:
            handshake(server.port, bundle.ca_pem, name)
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            handshake(server.port, bundle.ca_pem, "other.ferry-system.svc")
        # Another CA does not vouch for it.
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server.port, generate_bundle(["x"]).ca_pem, DNS[2])


def test_write_bundle_modes_and_load_bundle(tmp_path: Path) -> None:
    bundle = generate_bundle(DNS)
    cert_file, key_file, ca_file = write_bundle(bundle, tmp_path / "tls")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in (cert_file, key_file, ca_file)] == ["tls.crt", "tls.key", "ca.crt"]
    assert not list((tmp_path / "tls").glob("ca.key"))  # the CA key stays in the Secret only
    loaded = load_bundle(cert_file, key_file, ca_file)
    assert (loaded.cert_pem, loaded.key_pem, loaded.ca_pem) == (bundle.cert_pem, bundle.key_pem, bundle.ca_pem)
    other = write_bundle(generate_bundle(DNS), tmp_path / "other")
    with pytest.raises(ValueError, match="is not the key of the certificate"):
        load_bundle(cert_file, other[1])


# -- the Secret store ------------------------------------------------------------


def stored_bundle(fake: FakeKubeAPI) -> CertBundle:
    secret = fake.get_secret(NAMESPACE, SECRET)
    assert secret is not None
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    return CertBundle(data["ca.crt"], data["tls.crt"], data["tls.key"], data.get("ca.key"))


def test_ensure_creates_the_secret_then_reuses_it(fake: FakeKubeAPI, api: kubernetes.client.ApiClient) -> None:
    first = ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)
    (create,) = fake.writes
    assert (create.method, create.path) == ("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets")
    assert create.body["type"] == "kubernetes.io/tls"
    assert create.body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "ferry"}
    assert stored_bundle(fake) == first

    again = ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)
    assert again == first
    assert len(fake.writes) == 1  # a good Secret is only read


def race(fake: FakeKubeAPI, api: kubernetes.client.ApiClient, gate_method: str) -> list[CertBundle]:
    """Two replicas call ensure_cluster_bundle at once; both first GETs (and `gate_method`s) are
    held until both replicas got there, so both decide before either writes."""
    barriers = {"GET": threading.Barrier(2, timeout=10), gate_method: threading.Barrier(2, timeout=10)}
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def hold(method: str, path: str) -> None:
        if not path.startswith(f"/api/v1/namespaces/{NAMESPACE}/secrets"):
            return
        with lock:
            seen[method] = seen.get(method, 0) + 1
            first_two = seen[method] <= 2
        if method in barriers and first_two:
            barriers[method].wait()

    fake.on_request(hold)
    results: list[CertBundle] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            with fake.api_client() as own_client:
                results.append(ensure_cluster_bundle(own_client, NAMESPACE, SECRET, DNS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    fake.on_request(None)
    assert not errors, errors
    assert len(results) == 2
    return results


def test_two_replicas_racing_to_create_end_up_with_one_bundle(
    fake: FakeKubeAPI, api: kubernetes.client.ApiClient
) -> None:
    a, b = race(fake, api, "POST")
    assert a == b == stored_bundle(fake)
    assert fake.request_count(f"/api/v1/namespaces/{NAMESPACE}/secrets", method="POST") == 2  # one got 409
    assert fake.request_count(SECRET_PATH, method="GET") == 3  # ... and read the winner's


def put_bundle(fake: FakeKubeAPI, bundle: CertBundle, secret_type: str = "kubernetes.io/tls") -> str:
    data = {"tls.crt": bundle.cert_pem, "tls.key": bundle.key_pem, "ca.crt": bundle.ca_pem}
    if bundle.ca_key_pem:
        data["ca.key"] = bundle.ca_key_pem
    stored = fake.put_secret(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret_type,
            "metadata": {"name": SECRET, "namespace": NAMESPACE, "labels": {"team": "platform"}},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
    )
    return str(stored["metadata"]["resourceVersion"])


def test_expired_certificate_is_rotated_with_the_same_ca(fake: FakeKubeAPI, api: kubernetes.client.ApiClient) -> None:
    expired = generate_bundle(DNS, now=datetime.now(UTC) - timedelta(days=400))
    assert leaf(expired).not_valid_after_utc < datetime.now(UTC)
    assert rotation_reasons(expired, DNS)
    rv = put_bundle(fake, expired)

    rotated = ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)

    assert rotation_reasons(rotated, DNS) == []
    assert leaf(rotated).not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    assert rotated.ca_pem == expired.ca_pem  # same CA: the caBundle needs no change
    (update,) = fake.writes
    assert (update.method, update.path) == ("PUT", SECRET_PATH)
    assert update.body["metadata"]["resourceVersion"] == rv  # optimistic concurrency
    assert update.body["metadata"]["labels"]["team"] == "platform"  # others' labels kept
    assert stored_bundle(fake) == rotated


def test_certificate_missing_a_dns_name_is_reissued(fake: FakeKubeAPI, api: kubernetes.client.ApiClient) -> None:
    put_bundle(fake, generate_bundle(DNS[:2]))
    rotated = ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)
    san = leaf(rotated).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == DNS


def test_expiring_ca_is_replaced_and_the_old_one_still_trusted(
    fake: FakeKubeAPI, api: kubernetes.client.ApiClient
) -> None:
    old = generate_bundle(DNS, ca_valid_days=380, valid_days=20)  # leaf expires within 30 days, CA within a year
    put_bundle(fake, old)
    rotated = ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)
    new_ca, old_ca = x509.load_pem_x509_certificates(rotated.ca_pem)
    assert old_ca == x509.load_pem_x509_certificate(old.ca_pem)
    assert new_ca != old_ca
    leaf(rotated).verify_directly_issued_by(new_ca)
    assert rotation_reasons(rotated, DNS) == []


def test_unusable_secret_is_replaced_keeping_its_type(fake: FakeKubeAPI, api: kubernetes.client.ApiClient) -> None:
    fake.put_secret(
        {"metadata": {"name": SECRET, "namespace": NAMESPACE}, "type": "Opaque", "data": {"tls.crt": "bm9wZQ=="}}
    )
    bundle = ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)
    assert rotation_reasons(bundle, DNS) == []
    secret = fake.get_secret(NAMESPACE, SECRET)
    assert secret is not None and secret["type"] == "Opaque"
    assert stored_bundle(fake) == bundle


def test_two_replicas_racing_to_rotate_end_up_with_one_bundle(
    fake: FakeKubeAPI, api: kubernetes.client.ApiClient
) -> None:
    put_bundle(fake, generate_bundle(DNS, now=datetime.now(UTC) - timedelta(days=400)))
    a, b = race(fake, api, "PUT")
    assert a == b == stored_bundle(fake)
    assert rotation_reasons(a, DNS) == []
    assert fake.request_count(SECRET_PATH, method="PUT") == 2  # one got 409 Conflict and re-read


def test_ensure_reports_api_errors(fake: FakeKubeAPI, api: kubernetes.client.ApiClient) -> None:
    fake.fail_next(SECRET_PATH, status=403)
    with pytest.raises(CertStoreError, match="403"):
        ensure_cluster_bundle(api, NAMESPACE, SECRET, DNS)


# -- caBundle --------------------------------------------------------------------


def recorded_webhook_configurations() -> list[dict[str, Any]]:
    """The recorded setup, with its `<base64 CA>` placeholders replaced as a real cluster would hold them."""
    path = FIXTURES / "admission" / "mutatingwebhookconfigurations.yaml"
    configs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for config in configs:
        for webhook in config["webhooks"]:
            webhook["clientConfig"]["caBundle"] = base64.b64encode(b"stale CA").decode()
    return configs


def test_patch_ca_bundle_patches_every_webhook_of_the_named_configuration_only(
    fake: FakeKubeAPI, api: kubernetes.client.ApiClient
) -> None:
    ferry, identity = recorded_webhook_configurations()
    second = copy.deepcopy(ferry["webhooks"][0]) | {"name": "pods-namespace.ferry.dev"}
    del second["clientConfig"]["caBundle"]  # as `kubectl apply -k manifests/` leaves it
    ferry["webhooks"].append(second)
    fake.put_mutating_webhook_configuration(ferry)
    identity_rv = fake.put_mutating_webhook_configuration(identity)["metadata"]["resourceVersion"]
    ca_pem = generate_bundle(DNS).ca_pem
    wanted = base64.b64encode(ca_pem).decode()

    assert patch_ca_bundle(api, "a-ferry", ca_pem) is True

    (patch,) = fake.writes
    assert (patch.method, patch.path) == ("PATCH", f"{MWC_PATH}/a-ferry")
    assert patch.content_type == "application/json-patch+json"
    assert patch.body == [
        {"op": "test", "path": "/webhooks/0/name", "value": "pods.ferry.dev"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": wanted},
        {"op": "test", "path": "/webhooks/1/name", "value": "pods-namespace.ferry.dev"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": wanted},
    ]
    stored = fake.get_mutating_webhook_configuration("a-ferry")
    assert stored is not None
    assert [w["clientConfig"]["caBundle"] for w in stored["webhooks"]] == [wanted, wanted]
    assert stored["webhooks"][0]["clientConfig"]["url"] == "https://127.0.0.1:8443/ferry"  # rest untouched
    untouched = fake.get_mutating_webhook_configuration("b-eks-like-identity")
    assert untouched is not None and untouched["metadata"]["resourceVersion"] == identity_rv
    assert untouched["webhooks"] == identity["webhooks"]
    assert fake.request_count(f"{MWC_PATH}/b-eks-like-identity") == 0

    # Already up to date: read, nothing written.
    assert patch_ca_bundle(api, "a-ferry", ca_pem) is False
    assert len(fake.writes) == 1


def test_patch_ca_bundle_retries_when_the_configuration_changed(
    fake: FakeKubeAPI, api: kubernetes.client.ApiClient
) -> None:
    ferry, _ = recorded_webhook_configurations()
    fake.put_mutating_webhook_configuration(ferry)
    fake.fail_next(f"{MWC_PATH}/a-ferry", status=422, method="PATCH")  # e.g. a failed `test` op
    assert patch_ca_bundle(api, "a-ferry", b"CA") is True
    assert fake.request_count(f"{MWC_PATH}/a-ferry", method="PATCH") == 2
    stored = fake.get_mutating_webhook_configuration("a-ferry")
    assert stored is not None and stored["webhooks"][0]["clientConfig"]["caBundle"] == base64.b64encode(b"CA").decode()
