"""Security properties of what Ferry puts into pods and onto the wire.

Why it exists: three of Ferry's promises are about security, and each needs
evidence from the real code paths:

- every container Ferry injects meets the Pod Security Standard "restricted"
  (checked with `pss.py` on the patched pods of many generated pods, over TLS,
  with native and with regular sidecars, whatever the app's own pod-level
  securityContext says), and the patched pod is a valid Pod;
- the webhook serves TLS 1.2 or newer only: a client capped at TLS 1.1 fails
  the handshake (and the same client succeeds against a control server that
  allows TLS 1.1, so the failure is the webhook's doing, not the client's);
- no secret value appears in a termination message, the fetcher's stderr, the
  patched pod spec, or the webhook's logs and metrics, including on the error
  paths most likely to quote a value (jmesPath on non-JSON, on a non-string,
  on a missing key, SecretBinary). The session ledger rescans everything at
  the end of the run.

RBAC and "the webhook holds no AWS credentials" are asserted on the rendered
manifests by tests/manifests/ (see docs/reliability.md); not repeated here.
"""

from __future__ import annotations

import json
import ssl
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetcher.contract import build_spec
from tests.support import pss
from tests.support.fetch import fetcher_env, run_init, seed_client
from tests.support.leakscan import SecretLedger, new_secret_value
from tests.support.pods import make_pod
from tests.support.webhook_server import NAMESPACE, WebhookUnderTest, apply_patch, review, spc

from .conftest import record_result
from .corpus import GOOD

OWN = {"ferry-init", "ferry-sidecar"}
K8S_VERSION = kubernetes_validate.latest_version()
_PSS_STATS = {"pods": 0, "containers": 0, "native": 0, "regular": 0}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, ledger: SecretLedger) -> Iterator[dict[bool, WebhookUnderTest]]:
    spcs = [spc("db", GOOD)]
    started = {
        native: WebhookUnderTest(tmp_path_factory.mktemp(f"sec-{native}"), native_sidecars=native, spcs=spcs).start()
        for native in (True, False)
    }
    yield started
    for server in started.values():
        assert server.client is not None
        ledger.expose("metrics:security", server.metrics_text())
        server.stop()
    record_result("security", "restricted profile on injected containers", dict(_PSS_STATS))


security_contexts = st.fixed_dictionaries(
    {},
    optional={
        # Hostile app settings the injected containers must not inherit.
        "runAsUser": st.sampled_from([0, 1000, 65532]),
        "runAsGroup": st.sampled_from([0, 3000]),
        "fsGroup": st.sampled_from([0, 2000]),
        "runAsNonRoot": st.booleans(),
        "seccompProfile": st.sampled_from([{"type": "Unconfined"}, {"type": "RuntimeDefault"}]),
        "supplementalGroups": st.just([4000]),
    },
)
app_containers = st.lists(
    st.builds(
        lambda name, privileged: {
            "name": name,
            "image": "registry.example.com/app:1",
            **({"securityContext": {"privileged": True, "runAsUser": 0}} if privileged else {}),
        },
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c["name"],
)
requests = st.fixed_dictionaries(
    {"ferry.dev/inject": st.just("true")},
    optional={
        "ferry.dev/refresh-interval": st.sampled_from(["0", "30s", "5m"]),
        "ferry.dev/mount-path": st.sampled_from(["/mnt/secrets-store", "/var/secrets", "/app/config/secrets"]),
        "ferry.dev/path-translation": st.sampled_from(["_", "-", "False"]),
    },
).flatmap(
    lambda base: st.one_of(
        st.just({**base, "ferry.dev/objects": GOOD}),
        st.just({**base, "ferry.dev/secret-provider-class": "db"}),
    )
)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    annotations=requests,
    containers=app_containers,
    security=security_contexts,
    native=st.booleans(),
    restart=st.sampled_from([None, "Always", "Never"]),
)
def test_every_injected_container_meets_restricted(
    servers: dict[bool, WebhookUnderTest],
    ledger: SecretLedger,
    annotations: dict[str, str],
    containers: list[dict[str, Any]],
    security: dict[str, Any],
    native: bool,
    restart: str | None,
) -> None:
    spec: dict[str, Any] = {"securityContext": security} if security else {}
    if restart:
        spec["restartPolicy"] = restart
    obj = make_pod(annotations, containers, namespace=NAMESPACE, **spec)
    response = servers[native].admit(obj)
    assert response["allowed"], response.get("status")
    patched = apply_patch(obj, response)
    ledger.expose("patched-pod:pss", json.dumps(patched))
    kubernetes_validate.validate(patched, K8S_VERSION, strict=True)
    injected = [name for _, _, c in pss.iter_containers(patched) if (name := c.get("name")) in OWN]
    assert "ferry-init" in injected
    for name in injected:
        violations = pss.check_container(patched, name)
        assert violations == [], [str(v) for v in violations]
    added = [v for v in patched["spec"]["volumes"] if v not in obj["spec"].get("volumes", [])]
    assert added and all(pss.check_volume(volume) == [] for volume in added)
    _PSS_STATS["pods"] += 1
    _PSS_STATS["containers"] += len(injected)
    _PSS_STATS["native" if native else "regular"] += 1


# --- TLS. ----------------------------------------------------------------------------


def _legacy_context(purpose: int) -> ssl.SSLContext:
    """TLS 1.0-1.1 allowed; Python warns that these versions are deprecated, which is the point here."""
    context = ssl.SSLContext(purpose)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at the default level
    return context


def _tls11_client() -> ssl.SSLContext:
    context = _legacy_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    """The negotiated protocol, or None if the handshake failed."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as conn:
                return conn.version()
    except (ssl.SSLError, ConnectionResetError, OSError):
        return None


@pytest.fixture
def tls11_control_server(servers: dict[bool, WebhookUnderTest]) -> Iterator[int]:
    """A plain HTTPS server that accepts TLS 1.0+, with the webhook's own certificate."""
    server = servers[True]
    context = _legacy_context(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.server.cert_file, server.server.key_file)

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Quiet)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_webhook_refuses_tls_below_1_2(servers: dict[bool, WebhookUnderTest], tls11_control_server: int) -> None:
    client = _tls11_client()
    # The control proves this client can speak TLS 1.1 here, so a failure below is the webhook's refusal.
    assert _handshake(tls11_control_server, client) in ("TLSv1.1", "TLSv1")
    assert _handshake(servers[True].server.port, client) is None
    modern = servers[True].client_context()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        modern.minimum_version = modern.maximum_version = version
        assert (
            _handshake(servers[True].server.port, modern) == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        )
        modern = servers[True].client_context()
    record_result("security", "TLS", {"TLS 1.1 client": "refused", "TLS 1.2": "ok", "TLS 1.3": "ok"})


# --- Secret values never leak. -------------------------------------------------------------


def _leak_probe_spec(with_probe: str) -> Any:
    return build_spec(
        objects=[
            {
                "objectName": "probe",
                "objectType": "secretsmanager",
                "jmesPath": [{"path": with_probe, "objectAlias": "x"}],
            }
        ],
        region="us-east-1",
        min_refresh_seconds=0.0,
    )


# (name, how the secret is stored, jmesPath): each fails init on a path that could quote the value.
LEAK_PROBES = [
    ("not JSON", lambda token: {"SecretString": f"plain-{token}"}, "password"),
    ("truncated JSON", lambda token: {"SecretString": '{"password": "' + token}, "password"),
    ("non-string at path", lambda token: {"SecretString": json.dumps({"password": {"inner": token}})}, "password"),
    ("list at path", lambda token: {"SecretString": json.dumps({"password": [token]})}, "password"),
    ("missing key", lambda token: {"SecretString": json.dumps({"user": token})}, "password"),
    ("secret in a key name", lambda token: {"SecretString": json.dumps({token: "x"})}, "password"),
    ("SecretBinary", lambda token: {"SecretBinary": token.encode()}, "password"),
    ("invalid UTF-8 binary", lambda token: {"SecretBinary": b"\xff" + token.encode()}, "password"),
]


@pytest.mark.parametrize(("name", "store", "path"), LEAK_PROBES, ids=[p[0] for p in LEAK_PROBES])
def test_init_failures_never_quote_the_value(
    moto: Any, ledger: SecretLedger, tmp_path: Path, name: str, store: Any, path: str
) -> None:
    token = ledger.remember(new_secret_value().split("-")[1])
    stored = store(token)
    for value in stored.values():
        ledger.remember(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    seed_client(moto.url).create_secret(Name="probe", **stored)
    env = fetcher_env(moto.url, _leak_probe_spec(path), FERRY_LOG_LEVEL="debug")
    run = run_init(env, tmp_path / "s", tmp_path / "termination")
    assert run.returncode == 1, run.stderr
    assert "probe" in run.termination
    leaks = ledger.scan("termination", run.termination) + ledger.scan("stderr", run.stderr)
    record_result("leak_probes", name, {"exit": run.returncode, "leaked": bool(leaks)})
    ledger.expose(f"termination-message:probe:{name}", run.termination)
    ledger.expose(f"fetcher-stderr:probe:{name}", run.stderr)


def test_end_to_end_pod_spec_and_fetcher_output_hold_no_value(
    servers: dict[bool, WebhookUnderTest], moto: Any, ledger: SecretLedger, tmp_path: Path
) -> None:
    """Webhook injects, then the injected init container's own spec runs against moto: values only in files."""
    value = ledger.remember(new_secret_value("json"))
    seed_client(moto.url).create_secret(Name="app/db", SecretString=value)
    objects = (
        "- objectName: app/db\n  objectType: secretsmanager\n  jmesPath:\n    - {path: password, objectAlias: pw}\n"
    )
    obj = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/objects": objects, "ferry.dev/refresh-interval": "30s"},
        namespace=NAMESPACE,
    )
    sent = review(obj)
    answer = servers[True].post(json.dumps(sent).encode())
    ledger.expose("webhook-response:e2e", answer.text)
    patched = apply_patch(obj, answer.json()["response"])
    ledger.expose("patched-pod:e2e", json.dumps(patched))
    init = next(c for c in patched["spec"]["initContainers"] if c["name"] == "ferry-init")
    spec_json = next(e["value"] for e in init["env"] if e["name"] == "FERRY_SPEC")
    env = fetcher_env(moto.url, None, FERRY_SPEC=spec_json, FERRY_LOG_LEVEL="debug")
    run = run_init(env, tmp_path / "s", tmp_path / "termination")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "s" / "pw").read_text() == json.loads(value)["password"]
    ledger.expose("fetcher-stderr:e2e", run.stderr)
