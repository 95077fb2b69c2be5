"""The pod's Kubernetes ServiceAccount names the Google service account (iam.gke.io/gcp-service-account).

Precedence: the pod's ferry.dev/gcp-service-account, then the namespace's, then the ServiceAccount's
annotation; a bad value is denied naming the ServiceAccount and the annotation; a ServiceAccount Ferry could
not read denies a GCP pod (never a silent "no impersonation") and leaves an AWS pod alone; the memo key
follows the value.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fetcher.contract.gcp import KsaAnnotation
from tests.support.pods import make_pod
from tests.support.resolving import admit_request, lookup
from tests.support.reviews import pod_create_review
from tests.webhook.test_gcp_admission import GKE, SPC, gcp_pod, spec_of
from webhook.edge.app import create_app
from webhook.policy.admission import service_account_name
from webhook.policy.memo import pod_key
from webhook.policy.pipeline import Admission
from webhook.policy.request import PodRequest
from webhook.settings import Settings

WEB = "web@my-project.iam.gserviceaccount.com"
TEAM = "team@my-project.iam.gserviceaccount.com"
OTHER = "other@my-project.iam.gserviceaccount.com"
AWS_OBJECTS = "- objectName: prod/db\n  objectType: secretsmanager\n"


def admit(pod: dict[str, Any], ksa: KsaAnnotation | None, namespace_obj: dict[str, Any] | None = None) -> Admission:
    return admit_request(PodRequest.read(pod, "team-b", namespace_obj, ksa), GKE, spc_lookup=lookup(SPC))


def account(admission: Admission) -> str | None:
    assert admission.outcome == "injected", admission.message
    gcp = spec_of(admission).gcp
    assert gcp is not None
    return gcp.service_account


def test_the_service_accounts_annotation_is_impersonated() -> None:
    assert account(admit(gcp_pod(), KsaAnnotation("default", WEB))) == WEB
    assert account(admit(gcp_pod(), KsaAnnotation("default", None))) is None
    assert account(admit(gcp_pod(), None)) is None  # a view without ServiceAccounts: as before


def test_ferry_annotations_on_the_pod_or_namespace_override_it_with_a_warning() -> None:
    namespace = {"metadata": {"name": "team-b", "annotations": {"ferry.dev/gcp-service-account": TEAM}}}
    by_namespace = admit(gcp_pod(), KsaAnnotation("web", WEB), namespace)
    assert account(by_namespace) == TEAM
    assert any(
        "ServiceAccount team-b/web annotation iam.gke.io/gcp-service-account" in w and "namespace team-b" in w
        for w in by_namespace.warnings
    ), by_namespace.warnings
    pod = gcp_pod(**{"ferry.dev/gcp-service-account": OTHER})
    by_pod = admit(pod, KsaAnnotation("web", WEB), namespace)
    assert account(by_pod) == OTHER
    assert any("the pod's ferry.dev/gcp-service-account overrides it" in w for w in by_pod.warnings)
    same = admit(gcp_pod(**{"ferry.dev/gcp-service-account": WEB}), KsaAnnotation("web", WEB))
    assert account(same) == WEB and not any("iam.gke.io" in w for w in same.warnings)


def test_a_malformed_value_is_denied_naming_the_service_account_and_the_annotation() -> None:
    for bad in ("not-an-email", "web@evil.example.com", "x" * 256, "web@my-project.iam.gserviceaccount.com\n"):
        denied = admit(gcp_pod(), KsaAnnotation("web", bad))
        assert denied.outcome == "denied", bad
        assert denied.message is not None
        assert "ServiceAccount team-b/web annotation iam.gke.io/gcp-service-account" in denied.message
        assert "NAME@PROJECT.iam.gserviceaccount.com" in denied.message
        assert len(denied.message) < 1000  # bounded, whatever the value's size


def test_an_unread_service_account_denies_a_gcp_pod_and_leaves_an_aws_pod_alone() -> None:
    unread = KsaAnnotation("web", None, "Ferry could not read ServiceAccount team-b/web (its watch ...); retry")
    denied = admit(gcp_pod(), unread)
    assert denied.outcome == "denied" and denied.message is not None
    assert "ServiceAccount team-b/web" in denied.message and "retry" in denied.message
    # An explicit account needs no ServiceAccount.
    assert account(admit(gcp_pod(**{"ferry.dev/gcp-service-account": WEB}), unread)) == WEB
    aws = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/region": "eu-west-1", "ferry.dev/objects": AWS_OBJECTS},
        namespace="team-b",
    )
    assert admit(aws, unread).outcome == "injected"


def test_the_pods_service_account_name_defaults_as_the_api_server_does() -> None:
    assert service_account_name({"spec": {"serviceAccountName": "web"}}) == "web"
    assert service_account_name({"spec": {}}) == "default"
    assert service_account_name({"spec": {"serviceAccountName": ["x"]}}) == "default"
    assert service_account_name({}) == "default"


def test_the_memo_key_follows_the_service_accounts_annotation() -> None:
    pod = gcp_pod()
    keys = {
        pod_key(pod, "team-b", ksa)
        for ksa in (
            None,
            KsaAnnotation("default", None),
            KsaAnnotation("default", WEB),
            KsaAnnotation("default", OTHER),
            KsaAnnotation("web", WEB),
            KsaAnnotation("default", None, "unread"),
        )
    }
    assert len(keys) == 6
    assert pod_key(pod, "team-b", KsaAnnotation("default", WEB)) == pod_key(
        copy.deepcopy(pod), "team-b", KsaAnnotation("default", WEB)
    )


def test_every_podrequest_field_read_from_the_cluster_is_keyed_or_checked_on_recall() -> None:
    """PodRequest's fields that do not come from the pod: the memo must see each one change.

    The namespace's fields are checked on recall (the memo compares the namespace object); the
    ServiceAccount's annotation is in the key. A new field read from the cluster fails this until it is one or
    the other.
    """
    from_the_pod = {"pod", "spec", "annotations", "run_to_completion", "has_own_containers", "namespace"}
    checked_on_recall = {"namespace_annotations", "namespace_opted_in", "namespace_inject_label"}
    keyed = {"ksa"}
    assert set(PodRequest._fields) == from_the_pod | checked_on_recall | keyed


class AccountsView:
    """A cluster view that also keeps ServiceAccounts, as the watch cache does with GCP settings."""

    def __init__(self) -> None:
        self.ksa: dict[tuple[str, str], KsaAnnotation] = {}
        self.asked: list[tuple[str, str]] = []
        self.namespaces: dict[str, Mapping[str, Any]] = {}

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        # The same object until replaced, as the watch cache keeps it (the memo compares by identity).
        return self.namespaces.setdefault(name, {"metadata": {"name": name, "resourceVersion": "1"}})

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        return ()

    def is_ready(self) -> bool:
        return True

    def gke_service_account(self, namespace: str, name: str, *, may_get: bool = True) -> KsaAnnotation:
        self.asked.append((namespace, name))
        return self.ksa.get((namespace, name), KsaAnnotation(name, None))


def _spec_account(response: dict[str, Any]) -> str | None:
    import base64

    assert response["allowed"], response
    ops = json.loads(base64.b64decode(response["patch"]))
    for op in ops:
        value = op.get("value")
        containers = value if isinstance(value, list) else [value]
        for container in containers:
            if isinstance(container, dict) and container.get("name") == "ferry-init":
                raw = next(e["value"] for e in container["env"] if e["name"] == "FERRY_SPEC")
                gcp = json.loads(raw).get("gcp") or {}
                return gcp.get("serviceAccount")
    raise AssertionError(f"no ferry-init in {ops}")


def test_a_changed_annotation_reaches_the_next_replica_through_the_memo(asgi_client: Callable[[Any], Any]) -> None:
    view = AccountsView()
    app = create_app(GKE, view, native_sidecars=True)
    client = asgi_client(app)
    pod = gcp_pod()
    pod["spec"]["serviceAccountName"] = "web"

    def post() -> dict[str, Any]:
        review = pod_create_review(pod, namespace="team-b")
        reply = client.post("/mutate", content=json.dumps(review).encode())
        assert reply.status_code == 200
        response: dict[str, Any] = reply.json()["response"]
        return response

    view.ksa[("team-b", "web")] = KsaAnnotation("web", WEB)
    assert _spec_account(post()) == WEB
    assert _spec_account(post()) == WEB and app.state.memo.hits == 1
    view.ksa[("team-b", "web")] = KsaAnnotation("web", OTHER)
    assert _spec_account(post()) == OTHER, "a re-annotated ServiceAccount must not get the remembered answer"
    assert view.asked[-1] == ("team-b", "web")  # the request's namespace, never the pod's own field


def test_the_request_namespace_is_looked_up_not_the_pods_metadata(asgi_client: Callable[[Any], Any]) -> None:
    view = AccountsView()
    view.ksa[("victim", "web")] = KsaAnnotation("web", WEB)
    client = asgi_client(create_app(GKE, view, native_sidecars=True))
    pod = gcp_pod()
    pod["metadata"]["namespace"] = "victim"
    pod["spec"]["serviceAccountName"] = "web"
    review = pod_create_review(pod, namespace="team-b")
    response = client.post("/mutate", content=json.dumps(review).encode()).json()["response"]
    assert _spec_account(response) is None
    assert view.asked == [("team-b", "web")]


def test_without_gcp_settings_the_default_view_is_not_asked(asgi_client: Callable[[Any], Any]) -> None:
    """A view without the lookup (offline inject, AWS-only installs build none): admission as before."""
    from webhook.policy.view import StaticView

    client = asgi_client(create_app(Settings(), StaticView(), native_sidecars=True))
    pod = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/region": "eu-west-1", "ferry.dev/objects": AWS_OBJECTS},
        namespace="team-b",
    )
    review = pod_create_review(pod, namespace="team-b")
    assert client.post("/mutate", content=json.dumps(review).encode()).json()["response"]["allowed"]


def test_the_memo_trace_covers_gcp_pods_and_their_service_account() -> None:
    """The memo's read trace (tests/webhook/test_memo.py) over GCP pods with each kind of ServiceAccount answer:
    every read of the pod is a keyed part, and the one value read from the ServiceAccount changes the key."""
    from tests.webhook.test_memo import _TracedDict
    from webhook.policy.memo import KEYED_POD_PARTS

    plain = gcp_pod()
    named = copy.deepcopy(plain)
    named["spec"]["serviceAccountName"] = "web"
    answers = (
        KsaAnnotation("web", WEB),
        KsaAnnotation("web", None),
        KsaAnnotation("web", "not-an-account"),
        KsaAnnotation("web", None, "Ferry could not read ServiceAccount team-b/web; retry"),
    )
    reads: set[tuple[str, ...]] = set()
    outcomes, keys = set(), set()
    for pod in (plain, named, gcp_pod(**{"ferry.dev/gcp-service-account": OTHER})):
        for ksa in answers:
            traced = _TracedDict(pod, (), reads)
            assert service_account_name(traced) in ("default", "web")
            request = PodRequest.read(traced, "team-b", None, ksa)
            keys.add(pod_key(traced, "team-b", ksa))
            admission = admit_request(request, GKE, spc_lookup=lookup(SPC))
            outcomes.add(admission.outcome)
    assert outcomes == {"injected", "denied"}
    assert len(keys) == 3 * len(answers), "each ServiceAccount answer must give its own key"
    assert ("spec",) in reads, "not vacuous: the tracing sees reads"
    keyed = set(KEYED_POD_PARTS)
    outside = {path for path in reads if path[:2] not in keyed and path[:1] != ("spec",) and path not in keyed}
    assert not outside, f"admission reads {sorted(outside)}, which the memo key does not hold"
