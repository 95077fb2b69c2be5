"""A real Kubernetes control plane for the tests that cross the API: etcd, kube-apiserver, kube-controller-manager.

Why it exists: what the API server decides (RBAC, server-side apply merges,
ownerReferences, the garbage collector deleting dependents) cannot be faked
faithfully, so these tests run the real binaries from ``KUBEBUILDER_ASSETS``
(the envtest layout) on loopback. One control plane serves the whole session;
each test gets its own namespace. Without ``KUBEBUILDER_ASSETS`` the suite is
skipped, and only this suite may skip for that reason.

The control plane trusts a CA made here with ``cryptography``, signs
ServiceAccount tokens with a key made here, and knows one admin token (group
``system:masters``) through ``--token-auth-file``. Authorization is RBAC only,
so a ServiceAccount token can do exactly what its Role allows.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ADMIN_USER = "ferry-test-admin"
START_TIMEOUT_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_pki(folder: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost signed by it, and a ServiceAccount signing key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (folder / "server.crt").write_bytes(server_cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "sa.key").write_bytes(
        sa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@dataclass
class ControlPlane:
    """A running control plane: where it listens, the CA to trust, and an admin token."""

    host: str
    port: int
    ca_file: Path
    admin_token: str
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def admin(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """One admin request (independent of Ferry's client); returns the decoded JSON, raises on non-2xx."""
        status, payload = self.admin_status(method, path, body, content_type)
        if status >= 300:
            raise AssertionError(f"{method} {path} -> {status}: {payload}")
        return payload

    def admin_status(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    def new_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.admin("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def service_account_token(self, namespace: str, name: str) -> str:
        """Create the ServiceAccount (if needed) and return a fresh token for it (TokenRequest)."""
        status, _ = self.admin_status(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        assert status in (201, 409), status
        review = self.admin(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
        )
        return str(review["status"]["token"])

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload or b"null")
    except ValueError:
        return payload.decode(errors="replace")


def _wait_ready(plane: ControlPlane, path: str, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        for process in plane.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}; see {plane.workdir}")
        try:
            status, _ = plane.admin_status("GET", path)
            if status == 200:
                return
            last = str(status)
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"control plane not ready at {path}: {last}; see logs in {plane.workdir}")


def start_control_plane(assets: Path, workdir: Path) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager (garbage collector) under `workdir`."""
    _write_pki(workdir)
    admin_token = secrets.token_hex(16)
    (workdir / "tokens.csv").write_text(f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    etcd_port, peer_port, api_port, kcm_port = (_free_port() for _ in range(4))
    plane = ControlPlane("127.0.0.1", api_port, workdir / "ca.crt", admin_token, workdir)

    def spawn(name: str, args: list[str]) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        plane.processes.append(
            subprocess.Popen([str(assets / name), *args], stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        )
        log.close()

    spawn(
        "etcd",
        [
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
        ],
    )
    try:
        spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={workdir / 'certs'}",
                f"--tls-cert-file={workdir / 'server.crt'}",
                f"--tls-private-key-file={workdir / 'server.key'}",
                f"--token-auth-file={workdir / 'tokens.csv'}",
                f"--service-account-key-file={workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={workdir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
            ],
        )
        _wait_ready(plane, "/readyz", time.monotonic() + START_TIMEOUT_SECONDS)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "t", "cluster": {"server": plane.url, "certificate-authority": str(plane.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": admin_token}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "admin"}}],
            "current-context": "t",
        }
        (workdir / "kubeconfig").write_text(json.dumps(kubeconfig))
        spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={workdir / 'kubeconfig'}",
                f"--authentication-kubeconfig={workdir / 'kubeconfig'}",
                f"--authorization-kubeconfig={workdir / 'kubeconfig'}",
                "--controllers=garbagecollector,namespace",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={workdir / 'kcm-certs'}",
            ],
        )
    except BaseException:
        plane.stop()
        raise
    return plane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane for the session (skipped when KUBEBUILDER_ASSETS is unset)."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        pytest.skip("KUBEBUILDER_ASSETS is not set: the API-server suite needs the envtest binaries")
    plane = start_control_plane(Path(assets), tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace for one test."""
    return control_plane.new_namespace()
