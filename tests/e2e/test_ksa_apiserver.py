"""The pod's Kubernetes ServiceAccount names the Google service account, through the real API server.

Why it exists: the ServiceAccount view lists and watches metadata only (PartialObjectMetadata), reads a
ServiceAccount the watch has not delivered with a GET, and needs RBAC that only a GCP install carries. Each
of those is a contract with the kube-apiserver that only the real one can check: an annotated ServiceAccount,
a pod created through the real webhook, and the Google service account in the admitted pod's fetcher spec;
a changed annotation picked up by the next pod; the fetcher impersonating it against the Google fake; and an
AWS-only install that never lists ServiceAccounts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.e2e.kubelet import make_empty_dir, run_container
from tests.e2e.test_kubelet_gcp import PROJECT, PROVIDER_EXAMPLE, example_secrets
from tests.support.ferrylib import Ferry, pod, wait_for
from tests.support.gcpfake import GcpFake
from tests.support.paths import REPO_ROOT
from tests.support.reviews import pod_create_review
from webhook.cluster import serviceaccounts
from webhook.cluster.kube import WatchCache
from webhook.edge.app import AdmissionHandler
from webhook.edge.metrics import AdmissionMetrics
from webhook.settings import Settings

GKE_RBAC = REPO_ROOT / "manifests" / "components" / "gke" / "rbac.yaml"
GCP_ENV = {"FERRY_GCP_PROJECT": PROJECT, "FERRY_GCP_LOCATION": "us-central1", "FERRY_GCP_CLUSTER": "e2e"}
WEB = f"web@{PROJECT}.iam.gserviceaccount.com"
OTHER = f"other@{PROJECT}.iam.gserviceaccount.com"
ANNOTATION = "iam.gke.io/gcp-service-account"


@pytest.fixture
def gke_ferry(serving_ferry: Ferry, request: pytest.FixtureRequest) -> Iterator[Ferry]:
    """The same install turned into a GKE one: the gke component's RBAC and FERRY_GCP_* on a fresh replica.

    With `@pytest.mark.parametrize("gke_ferry", ["no-rbac"], indirect=True)`: the settings without the grant.
    """
    ferry = serving_ferry
    ferry.stop_all()
    if getattr(request, "param", None) != "no-rbac":
        ferry.plane.kubectl("apply", "-f", str(GKE_RBAC))
    ferry.extra_env.update(GCP_ENV)
    try:
        ferry.refresh_token()
        ferry.start_replica()
        yield ferry
    finally:
        ferry.stop_all()
        for key in GCP_ENV:
            ferry.extra_env.pop(key, None)
        ferry.plane.kubectl("delete", "-f", str(GKE_RBAC), "--ignore-not-found")
        ferry.start_replica()


def _service_account(ferry: Ferry, ns: str, name: str, value: str | None) -> None:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    if value is not None:
        body["metadata"]["annotations"] = {ANNOTATION: value}
    ferry.plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))


def _gcp_pod(name: str, service_account: str) -> dict[str, Any]:
    values = {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "app-secrets-with-extract-key"}
    manifest = pod(name, annotations=values, serviceAccountName=service_account)
    manifest["spec"]["securityContext"]["fsGroup"] = 2000
    return manifest


def _admit(ferry: Ferry, ns: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the pod (retried while the watch cache has not seen the class yet); the stored pod."""
    stored: dict[str, Any] = {}

    def admitted() -> bool:
        try:
            stored.update(ferry.create_pod(ns, manifest))
        except kubernetes.client.ApiException:
            return False
        return True

    wait_for(admitted, timeout=30, what=f"pod {manifest['metadata']['name']} admitted")
    return stored


def _impersonated(stored: dict[str, Any]) -> str | None:
    init = next(c for c in stored["spec"]["initContainers"] if c["name"] == "ferry-init")
    spec = json.loads(next(e["value"] for e in init["env"] if e["name"] == "FERRY_SPEC"))
    account: str | None = (spec.get("gcp") or {}).get("serviceAccount")
    return account


def _namespace(ferry: Ferry) -> str:
    ns = ferry.create_namespace("ksa")
    ferry.apply(ns, [yaml.safe_load(PROVIDER_EXAMPLE)], check=True)
    return ns


def test_the_service_accounts_annotation_reaches_the_fetcher_and_a_change_reaches_the_next_pod(
    gke_ferry: Ferry,
) -> None:
    ns = _namespace(gke_ferry)
    _service_account(gke_ferry, ns, "web", WEB)
    _service_account(gke_ferry, ns, "plain", None)
    first = _admit(gke_ferry, ns, _gcp_pod("first", "web"))
    assert _impersonated(first) == WEB
    # The GKE install watches ServiceAccounts (the AWS-only test below checks this gauge is absent there).
    assert 'ferry_cache_freshness_seconds{resource="serviceaccounts"}' in gke_ferry.metrics(gke_ferry.replicas[0])
    assert _impersonated(_admit(gke_ferry, ns, _gcp_pod("plain", "plain"))) is None

    gke_ferry.plane.kubectl("annotate", "-n", ns, "serviceaccount", "web", f"{ANNOTATION}={OTHER}", "--overwrite")
    names = iter(f"next-{i}" for i in range(1000))
    # The watch delivers the change within moments; every pod admitted after that impersonates the new account.
    wait_for(
        lambda: _impersonated(_admit(gke_ferry, ns, _gcp_pod(next(names), "web"))) == OTHER,
        timeout=30,
        what="a pod admitted with the re-annotated account",
    )
    assert _impersonated(_admit(gke_ferry, ns, _gcp_pod("after", "web"))) == OTHER

    # An override on the pod wins, and the user is told the ServiceAccount says otherwise.
    manifest = _gcp_pod("override", "web")
    manifest["metadata"]["annotations"]["ferry.dev/gcp-service-account"] = WEB
    assert _impersonated(_admit(gke_ferry, ns, manifest)) == WEB


def test_a_service_account_created_just_before_its_pod(gke_ferry: Ferry) -> None:
    """Created and used in one breath (as `kubectl apply` of both does): the GET on a miss covers watch lag."""
    ns = _namespace(gke_ferry)
    _admit(gke_ferry, ns, _gcp_pod("warm", "default"))  # the class is in the cache
    for i in range(3):
        name = f"fresh-{i}"
        _service_account(gke_ferry, ns, name, WEB)
        stored = gke_ferry.create_pod(ns, _gcp_pod(name, name))
        assert _impersonated(stored) == WEB


def test_a_malformed_annotation_is_denied_naming_the_service_account(gke_ferry: Ferry) -> None:
    ns = _namespace(gke_ferry)
    _admit(gke_ferry, ns, _gcp_pod("warm", "default"))
    _service_account(gke_ferry, ns, "bad", "x" * 5000)
    wait_for(lambda: _denial(gke_ferry, ns, _gcp_pod("bad", "bad")) is not None, timeout=30, what="the denial")
    message = _denial(gke_ferry, ns, _gcp_pod("bad", "bad"))
    assert message is not None
    assert f"ServiceAccount {ns}/bad annotation {ANNOTATION}" in message
    assert "NAME@PROJECT.iam.gserviceaccount.com" in message and len(message) < 2000


def _denial(ferry: Ferry, ns: str, manifest: dict[str, Any]) -> str | None:
    try:
        ferry.create_pod(ns, manifest, dry_run=True)
    except kubernetes.client.ApiException as exc:
        return str(json.loads(exc.body or "{}").get("message"))
    return None


def test_the_view_lists_and_watches_metadata_only_and_gets_a_miss(gke_ferry: Ferry, monkeypatch: Any) -> None:
    """The view itself against the API server, with the webhook's own token: pages, watch, GET, namespaces."""
    monkeypatch.setattr(serviceaccounts, "PAGE_SIZE", 7)  # several pages from a few dozen accounts
    ns_a, ns_b = gke_ferry.create_namespace("ksa-a"), gke_ferry.create_namespace("ksa-b")
    for i in range(20):  # and each namespace's default: 23 in all
        _service_account(gke_ferry, ns_a, f"sa-{i}", WEB if i % 2 else None)
    _service_account(gke_ferry, ns_b, "sa-1", OTHER)
    api = kubernetes.client.ApiClient(_webhook_configuration(gke_ferry))
    cache = WatchCache(api, service_accounts=True, backoff_initial=0.05, resync_backoff_max=0.5)
    with cache:
        assert cache.wait_ready(60)
        assert cache.gke_service_account(ns_a, "sa-1") == (("sa-1", WEB, None, False))
        assert cache.gke_service_account(ns_a, "sa-2") == (("sa-2", None, None, False))
        assert cache.gke_service_account(ns_b, "sa-1") == (("sa-1", OTHER, None, False))  # never mixed
        assert cache.gke_service_account(ns_b, "sa-2") == (("sa-2", None, None, False))  # absent there: a 404
        view = cache._service_accounts
        assert view is not None
        # What the API server sends the view: metadata only, never the whole object.
        response = view._list_metadata(limit=2, _preload_content=False)
        page = json.loads(response.data)
        response.release_conn()
        assert page["kind"] == "PartialObjectMetadataList" and page["items"][0]["kind"] == "PartialObjectMetadata"
        kept = [obj for (ns, _), obj in list(view.reflector.items.items()) if ns in (ns_a, ns_b)]
        assert len(kept) == 23 and all(set(obj) <= {"gsa"} for obj in kept)
        gets = view.gets
        gke_ferry.plane.kubectl("annotate", "-n", ns_a, "serviceaccount", "sa-2", f"{ANNOTATION}={OTHER}")
        wait_for(lambda: cache.gke_service_account(ns_a, "sa-2") == ("sa-2", OTHER, None, False), what="the watch")
        assert view.gets == gets, "a watched ServiceAccount needs no GET"

        # A miss, made certain by holding the watch's updates back: one GET reads it.
        view.reflector.items.pop((ns_a, "sa-3"))
        assert cache.gke_service_account(ns_a, "sa-3") == ("sa-3", WEB, None, False)
        assert view.gets == gets + 1


@pytest.mark.parametrize("gke_ferry", ["no-rbac"], indirect=True)
def test_a_gcp_install_without_the_grant_stays_ready_and_says_what_to_grant(gke_ferry: Ferry) -> None:
    """The component forgotten: the webhook is still ready (it was waited for), AWS pods and GCP pods that name
    their account are admitted, and a GCP pod relying on its ServiceAccount is told which grant is missing."""
    ns = _namespace(gke_ferry)
    _service_account(gke_ferry, ns, "web", WEB)
    explicit = _gcp_pod("explicit", "web")
    explicit["metadata"]["annotations"]["ferry.dev/gcp-service-account"] = OTHER
    assert _impersonated(_admit(gke_ferry, ns, explicit)) == OTHER
    message = _denial(gke_ferry, ns, _gcp_pod("relying", "web"))
    assert message is not None and f"ServiceAccount {ns}/web" in message
    assert "get, list and watch on serviceaccounts" in message and "manifests/components/gke" in message
    aws = pod(
        "aws",
        annotations={
            "ferry.dev/inject": "true",
            "ferry.dev/region": "us-east-1",
            "ferry.dev/objects": "- objectName: db\n  objectType: secretsmanager\n",
        },
    )
    assert any(c["name"] == "ferry-init" for c in _admit(gke_ferry, ns, aws)["spec"]["initContainers"])


def test_an_aws_only_install_never_lists_service_accounts(serving_ferry: Ferry) -> None:
    ferry = serving_ferry
    assert not ferry.extra_env.get("FERRY_GCP_PROJECT")
    subject = f"system:serviceaccount:{ferry.namespace}:ferry-webhook"
    for verb in ("list", "watch", "get"):
        result = ferry.plane.kubectl("auth", "can-i", verb, "serviceaccounts", "--as", subject, check=False)
        assert result.stdout.strip() == "no", (verb, result.stdout)
    ns = ferry.create_namespace("aws-only", opted_in=False)
    manifest = pod(
        "aws",
        annotations={
            "ferry.dev/inject": "true",
            "ferry.dev/region": "us-east-1",
            "ferry.dev/objects": "- objectName: db\n  objectType: secretsmanager\n",
        },
    )
    stored = _admit(ferry, ns, manifest)
    assert any(c["name"] == "ferry-init" for c in stored["spec"]["initContainers"])
    for replica in ferry.replicas:
        assert ferry.get(replica, "/readyz")[0] == 200
        assert not [line for line in replica.log_lines() if "serviceaccounts" in line.lower()]
        metrics = ferry.metrics(replica)
        assert 'ferry_cache_freshness_seconds{resource="namespaces"}' in metrics  # the gauge is there
        assert 'resource="serviceaccounts"' not in metrics


@pytest.fixture
def google() -> Iterator[GcpFake]:
    with example_secrets() as fake:
        yield fake


def _run_init(ferry: Ferry, google: GcpFake, ns: str, stored: dict[str, Any], ksa: str) -> tuple[Any, Path]:
    """ferry-init as the kubelet would run it, with a token for `ksa` of the volume's audience."""
    folder = Path(tempfile.mkdtemp(prefix="ferry-e2e-ksa-"))
    os.chmod(folder, 0o755)
    volume = next(v for v in stored["spec"]["volumes"] if v["name"] == "ferry-gcp-token")
    audience = volume["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    token_dir = folder / "gcp-token"
    token_dir.mkdir()
    (token_dir / "token").write_text(ferry.plane.token_for(ns, ksa, audience))
    os.chmod(token_dir / "token", 0o444)
    volumes = {"ferry-secrets": make_empty_dir(folder / "ferry-secrets", stored), "ferry-gcp-token": token_dir}
    return run_container(stored, "ferry-init", volumes, google.env(token_dir / "token"), folder), folder


def test_the_fetcher_impersonates_the_service_accounts_google_account(gke_ferry: Ferry, google: GcpFake) -> None:
    """The kubelet step: ferry-init exchanges the pod's token, impersonates WEB (allowed for ns/web only)."""
    ns = _namespace(gke_ferry)
    _service_account(gke_ferry, ns, "web", WEB)
    google.allow_impersonation(f"{ns}/web", WEB)
    google.grant(WEB, f"projects/{PROJECT}/")  # the Google account may read; the KSA itself may not
    stored = _admit(gke_ferry, ns, _gcp_pod("app", "web"))
    result, folder = _run_init(gke_ferry, google, ns, stored, "web")
    try:
        assert result.returncode == 0, result.stderr
        assert (folder / "ferry-secrets" / "good1.txt").read_text() == "global-user"
        assert google.count("GenerateAccessToken") == 1
        assert google.count("Metadata") == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_tenant_naming_another_tenants_google_account_gets_nothing(gke_ferry: Ferry, google: GcpFake) -> None:
    """A tenant annotates its own ServiceAccount with an account whose workloadIdentityUser binding names
    another namespace's: admitted (the name grants nothing), refused by Google, no file, no other identity."""
    victim, tenant = _namespace(gke_ferry), _namespace(gke_ferry)
    google.allow_impersonation(f"{victim}/web", WEB)
    google.grant(WEB, f"projects/{PROJECT}/")
    _service_account(gke_ferry, tenant, "web", WEB)
    stored = _admit(gke_ferry, tenant, _gcp_pod("thief", "web"))
    assert _impersonated(stored) == WEB
    result, folder = _run_init(gke_ferry, google, tenant, stored, "web")
    try:
        assert result.returncode != 0
        assert google.count("GenerateAccessToken") == 1 and google.count("AccessSecretVersion") == 0
        assert google.count("Metadata") == 0
        assert not (folder / "ferry-secrets" / "good1.txt").exists()
        assert "global-user" not in result.stdout + result.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _webhook_configuration(ferry: Ferry) -> kubernetes.client.Configuration:
    """The webhook's own identity (its ServiceAccount's token), so RBAC is what the install grants."""
    configuration = kubernetes.client.Configuration()
    configuration.host = ferry.plane.url
    configuration.ssl_ca_cert = ferry.plane.ca_file
    configuration.api_key = {"authorization": f"Bearer {ferry.plane.token_for(ferry.namespace, 'ferry-webhook')}"}
    return configuration


def test_forged_reviews_cannot_spend_the_service_account_reads_of_other_tenants(gke_ferry: Ferry) -> None:
    """Any pod can POST reviews naming any known namespace and made-up ServiceAccounts: each miss cost a GET
    on the event loop and a token of the cluster-wide budget, so a tenant could spend it all and deny the GCP
    pods of others created just after their ServiceAccount. Only a pod Ferry injects may cost a GET, and, with
    FERRY_API_SERVER_ADDRESSES set, only a review from those addresses."""
    ns = _namespace(gke_ferry)
    _service_account(gke_ferry, ns, "fresh", WEB)
    api = kubernetes.client.ApiClient(_webhook_configuration(gke_ferry))
    settings = Settings.from_env({**GCP_ENV, "FERRY_API_SERVER_ADDRESSES": "127.0.0.2"})
    cache = WatchCache(api, service_accounts=True, backoff_initial=0.05, resync_backoff_max=0.5)
    with cache:
        assert cache.wait_ready(60)
        view = cache._service_accounts
        assert view is not None
        wait_for(lambda: (ns, "fresh") in view.reflector.items, what="the watch")
        handler = AdmissionHandler(settings, cache, True, AdmissionMetrics(CollectorRegistry()))

        def review(name: str, service_account: str, peer: str) -> dict[str, Any]:
            manifest = pod(name, serviceAccountName=service_account)
            status, body = handler.handle(json.dumps(pod_create_review(manifest, namespace=ns)).encode(), peer=peer)
            assert status == 200
            return dict(json.loads(body)["response"])

        for i in range(20):  # pods Ferry leaves alone: their ServiceAccount is never read
            assert review(f"plain-{i}", f"ghost-{i}", "127.0.0.2")["allowed"]
        assert view.gets == 0
        for i in range(20):  # Ferry's pods in a forged review from any other address
            forged = _gcp_pod(f"forged-{i}", f"ghost-{i}")
            status, _ = handler.handle(json.dumps(pod_create_review(forged, namespace=ns)).encode(), peer="127.0.0.9")
            assert status == 200
        assert view.gets == 0
        # The API server's own review of a pod whose ServiceAccount the watch has not delivered: one GET.
        view.reflector.items.pop((ns, "fresh"))
        status, body = handler.handle(
            json.dumps(pod_create_review(_gcp_pod("real", "fresh"), namespace=ns)).encode(), peer="127.0.0.2"
        )
        assert status == 200 and view.gets == 1
        assert json.loads(body)["response"]["allowed"]


def test_a_tenants_many_service_accounts_cannot_grow_the_view_past_its_bound(
    gke_ferry: Ferry, monkeypatch: Any
) -> None:
    """ServiceAccounts are cheap for a tenant to create, and each long name with a 256-character annotation
    cost the view about 1 KB: enough of them and every replica runs out of memory, and with failurePolicy Fail
    no pod is admitted anywhere. The view is bounded in bytes; one it could not keep is read with a GET."""
    monkeypatch.setattr(serviceaccounts, "MAX_VIEW_BYTES", 6000, raising=False)
    ns = gke_ferry.create_namespace("ksa-many")
    for i in range(12):
        _service_account(gke_ferry, ns, f"{'a' * 200}-{i}", f"{'x' * 250}{i}")
    _service_account(gke_ferry, ns, "web", WEB)
    api = kubernetes.client.ApiClient(_webhook_configuration(gke_ferry))
    cache = WatchCache(api, service_accounts=True, backoff_initial=0.05, resync_backoff_max=0.5)
    with cache:
        assert cache.wait_ready(60)
        view = cache._service_accounts
        assert view is not None
        assert view.reflector.bytes_kept <= 6000
        kept = sum(1 for key in view.reflector.items if key[0] == ns)
        assert kept < 13
        # Still answered right, kept or not (a GET for one the view could not keep).
        assert cache.gke_service_account(ns, "web") == ("web", WEB, None, False)
        assert cache.gke_service_account(ns, f"{'a' * 200}-11") == (f"{'a' * 200}-11", f"{'x' * 250}11", None, False)
