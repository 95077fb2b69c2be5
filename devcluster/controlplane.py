"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Why it exists: recorded JSON and OpenAPI schemas cannot show what a real API
server does with Ferry's patches (full pod validation, matchConditions CEL,
reinvocation, Pod Security, LimitRange, the ServiceAccount plugin, dry-run,
RBAC). The binaries come from the envtest convention: the folder named by
``KUBEBUILDER_ASSETS`` holds ``etcd``, ``kube-apiserver`` and
``kube-controller-manager``.

Webhooks are reached the way a cluster reaches them. The API server's egress
selector sends its "cluster" traffic (webhook calls) through an HTTP CONNECT
proxy run here; the proxy maps a Service's ClusterIP and port to a loopback
port (``route``) and passes every other loopback address through. So Ferry's
MutatingWebhookConfiguration keeps its production ``clientConfig.service``,
and the API server checks Ferry's certificate against the Service DNS name,
exactly as in a cluster.

The same control plane backs `make demo` when ``KUBEBUILDER_ASSETS`` is set, so
a newcomer sees real kubectl output rather than text the demo wrote.
"""

from __future__ import annotations

import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devcluster.net import free_port

ADMIN_USER = "e2e-admin"
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    """A component did not start; carries the tail of its log."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ConnectProxy:
    """The API server's egress: HTTP CONNECT to host:port, re-mapped by `routes`."""

    def __init__(self, socket_path: str) -> None:
        # A Unix socket: the egress selector speaks plain HTTP CONNECT only over "uds".
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(socket_path)
        self._sock.listen(64)
        self._routes: dict[tuple[str, int], list[int]] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.connects: list[str] = []
        self._thread = threading.Thread(target=self._accept, name="egress-proxy", daemon=True)
        self._thread.start()

    def route(self, host: str, port: int, targets: list[int]) -> None:
        """CONNECTs to host:port go to these loopback ports, round-robin (an empty list refuses)."""
        with self._lock:
            self._routes[(host, port)] = list(targets)

    def _target(self, host: str, port: int) -> tuple[str, int] | None:
        with self._lock:
            targets = self._routes.get((host, port))
            if targets is None:
                return (host, port) if host in ("127.0.0.1", "localhost") else None
            if not targets:
                return None
            index = self._next.get((host, port), 0)
            self._next[(host, port)] = index + 1
            return ("127.0.0.1", targets[index % len(targets)])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) < 2 or parts[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            host, _, port_text = parts[1].rpartition(":")
            host = host.strip("[]")
            self.connects.append(parts[1])
            target = self._target(host, int(port_text))
            if target is None:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
                return
            try:
                upstream = socket.create_connection(target, timeout=5)
                # Forward each piece at once: with Nagle, a request's second small write would wait for
                # the peer's delayed ACK (~40 ms), a delay no real network path to a webhook adds.
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            conn.settimeout(None)
            upstream.settimeout(None)
            _pump(conn, upstream)
        except OSError:
            pass
        finally:
            conn.close()
            if upstream is not None:
                upstream.close()

    def close(self) -> None:
        self._sock.close()


def _pump(a: socket.socket, b: socket.socket) -> None:
    # A selector, not select(): a process with many sockets open (the edge tests) has descriptors past
    # select()'s 1024, and a tunnel closed from the other side ends the pump instead of raising in its thread.
    peers = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        try:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while True:
                ready = selector.select(300)
                if not ready:
                    return
                for key, _ in ready:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # either end closed under us
            return


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, admin via a static token."""

    assets: Path
    workdir: Path
    url: str = ""
    ca_file: str = ""
    admin_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    kubeconfig: str = ""
    proxy: ConnectProxy | None = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _ports: dict[str, int] = field(default_factory=dict)

    # --- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_keys()
        self._ports = {"etcd": free_port(), "etcd_peer": free_port(), "apiserver": free_port()}
        self.url = f"https://127.0.0.1:{self._ports['apiserver']}"
        self.proxy = ConnectProxy(str(self.workdir / "egress.sock"))
        self._write_egress_config()
        self._start_etcd()
        self.start_apiserver(timeout)
        self._write_kubeconfig(Path(self.workdir / "admin.kubeconfig"), self.admin_token)
        self.kubeconfig = str(self.workdir / "admin.kubeconfig")
        self._start_controller_manager()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                _terminate(proc)
        if self.proxy is not None:
            self.proxy.close()

    def restart_apiserver(self, timeout: float = 120.0) -> None:
        """Kill kube-apiserver (as a crash would) and start it again on the same port, keys and certificate."""
        proc = self._procs.pop("kube-apiserver")
        proc.kill()
        proc.wait(timeout=30)
        self.start_apiserver(timeout)

    def _write_keys(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.workdir / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (self.workdir / "sa.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        (self.workdir / "tokens.csv").write_text(f'{self.admin_token},{ADMIN_USER},e2e-admin-uid,"system:masters"\n')

    def _write_egress_config(self) -> None:
        assert self.proxy is not None
        config = {
            "apiVersion": "apiserver.k8s.io/v1beta1",
            "kind": "EgressSelectorConfiguration",
            "egressSelections": [
                {
                    "name": "cluster",
                    "connection": {
                        "proxyProtocol": "HTTPConnect",
                        "transport": {"uds": {"udsName": self.proxy.socket_path}},
                    },
                }
            ],
        }
        (self.workdir / "egress.yaml").write_text(yaml.safe_dump(config))

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [str(self.assets / name), *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._procs[name] = proc
        return proc

    def _start_etcd(self) -> None:
        port, peer = self._ports["etcd"], self._ports["etcd_peer"]
        self._spawn(
            "etcd",
            [
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
            ],
        )
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{port}/health"), 60)

    def start_apiserver(self, timeout: float) -> None:
        cert_dir = self.workdir / "apiserver-certs"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self._ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self._ports['apiserver']}",
                f"--cert-dir={cert_dir}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-key-file={self.workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                f"--service-account-issuer={ISSUER}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--egress-selector-config-file={self.workdir / 'egress.yaml'}",
                "--allow-privileged=true",
            ],
        )
        self.ca_file = str(cert_dir / "apiserver.crt")
        self._wait("kube-apiserver", self._apiserver_ready, timeout)

    def _apiserver_ready(self) -> bool:
        """True once the API server answers /readyz over TLS it can prove with its own certificate.

        kube-apiserver writes apiserver.crt while it starts: the file may be missing, empty or cut
        short when this polls. Any of those (and a refused or reset connection) means "not yet",
        never an error: only a complete certificate is loaded, inside the same guard as the request.
        """
        try:
            pem = Path(self.ca_file).read_text()
            if "-----END CERTIFICATE-----" not in pem:
                return False
            context = ssl.create_default_context(cadata=pem)
            request = urllib.request.Request(
                f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, ValueError):  # ssl.SSLError and urllib's errors are OSErrors; bad PEM text a ValueError
            return False

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--controllers=deployment,replicaset,job,serviceaccount,namespace,garbagecollector",
                f"--root-ca-file={self.ca_file}",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--concurrent-deployment-syncs=2",
                "--concurrent-replicaset-syncs=2",
            ],
        )
        # The serviceaccount controller creates "default" in each namespace: wait for the first one.
        self._wait("kube-controller-manager", lambda: self._has_default_sa("default"), 90)

    def _has_default_sa(self, namespace: str) -> bool:
        result = self.kubectl("get", "serviceaccount", "default", "-n", namespace, "-o", "name", check=False)
        return result.returncode == 0

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{_tail(self.workdir / f'{name}.log')}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout:.0f}s:\n{_tail(self.workdir / f'{name}.log')}")

    # --- clients ---------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": self.url, "certificate-authority": self.ca_file}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "user"}}],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def kubeconfig_for_token(self, token: str, name: str) -> str:
        """A kubeconfig file that authenticates with `token` (e.g. a ServiceAccount's)."""
        path = self.workdir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, token)
        return str(path)

    def api_client(self) -> Any:
        """A new kubernetes.client.ApiClient as admin."""
        import kubernetes.client

        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = self.ca_file
        configuration.api_key = {"authorization": f"Bearer {self.admin_token}"}
        return kubernetes.client.ApiClient(configuration)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane as admin."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ControlPlaneError("kubectl is not on PATH")
        return subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def token_for(self, namespace: str, service_account: str, audience: str | None = None) -> str:
        """A bound ServiceAccount token from the TokenRequest API."""
        import kubernetes.client

        with self.api_client() as api:
            spec = kubernetes.client.V1TokenRequestSpec(
                audiences=[audience] if audience else [], expiration_seconds=3600
            )
            response = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
                service_account, namespace, kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
            )
            return str(response.status.token)

    def metrics(self) -> str:
        """The API server's /metrics, read as admin."""
        context = ssl.create_default_context(cafile=self.ca_file)
        request = urllib.request.Request(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return str(response.read().decode())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def start_control_plane(assets: str, workdir: Path | None = None) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager; their files go in `workdir` (default: a new one)."""
    missing = [
        name for name in ("etcd", "kube-apiserver", "kube-controller-manager") if not (Path(assets) / name).is_file()
    ]
    if missing:
        raise ControlPlaneError(
            f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}: point it at the folder of etcd, "
            "kube-apiserver and kube-controller-manager (the envtest layout), or unset it (tests/e2e are then "
            "skipped and the demo runs without a cluster)"
        )
    plane = ControlPlane(assets=Path(assets), workdir=workdir or Path(tempfile.mkdtemp(prefix="ferry-e2e-")))
    try:
        plane.start()
    except BaseException:
        plane.stop()
        raise
    return plane
