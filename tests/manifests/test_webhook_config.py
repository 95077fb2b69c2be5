"""The MutatingWebhookConfiguration: its structure, and its scoping evaluated on sample and recorded pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.manifests.render import (
    MWC_NAME,
    NAMESPACE,
    NAMESPACE_ENTRY,
    NAMESPACE_OPT_IN_LABEL,
    NEVER_INJECTED,
    POD_ENTRY,
    WARN_ENTRY,
    WEBHOOK_NAME,
    only,
)
from tests.manifests.scoping import (
    CelError,
    MiniCel,
    _namespace,
    _pod,
    called_entries,
    recorded_namespaces,
)
from tests.support.paths import FIXTURES

# --- MutatingWebhookConfiguration: structure --------------------------------------------


def webhooks(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    mwc = only(objects, "MutatingWebhookConfiguration", MWC_NAME)
    return {w["name"]: w for w in mwc["webhooks"]}


def test_mutating_webhook_structure(base: list[dict[str, Any]]) -> None:
    entries = webhooks(base)
    assert set(entries) == {POD_ENTRY, NAMESPACE_ENTRY, WARN_ENTRY}
    service = only(base, "Service", WEBHOOK_NAME)
    for name, hook in entries.items():
        # Pods that never opted in are only warned: an outage of Ferry must not stop them.
        assert hook["failurePolicy"] == ("Ignore" if name == WARN_ENTRY else "Fail"), name
        assert hook["sideEffects"] == "None", name
        assert hook["reinvocationPolicy"] == ("Never" if name == WARN_ENTRY else "IfNeeded"), name
        assert hook["admissionReviewVersions"] == ["v1"], name
        assert 1 <= hook["timeoutSeconds"] <= 10, name
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ], name
        ref = hook["clientConfig"]["service"]
        assert ref == {"name": WEBHOOK_NAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}, name
        assert ref["port"] in {p["port"] for p in service["spec"]["ports"]}
        # The webhook (or cert-manager) fills caBundle; a stale one in git would break TLS.
        assert "caBundle" not in hook["clientConfig"], name
        assert "url" not in hook["clientConfig"], name
        assert hook["matchConditions"], name
        assert any("ferry.dev/inject" in c["expression"] for c in hook["matchConditions"]), name
        excluded = [
            e
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
        ]
        assert excluded and NEVER_INJECTED <= set(excluded[0]["values"]), name


def test_mini_cel_follows_cel_error_semantics() -> None:
    pod = _pod(None)
    with pytest.raises(CelError):
        MiniCel("object.metadata.annotations['ferry.dev/inject'] == 'true'").evaluate({"object": pod})
    assert MiniCel("has(object.metadata.annotations)").evaluate({"object": pod}) is False
    assert MiniCel("has(object.metadata.name) && object.metadata.name == 'p'").evaluate({"object": pod}) is True
    assert MiniCel("!has(object.metadata.annotations) || object.metadata.annotations['x'] == 'y'").evaluate(
        {"object": pod}
    )


def test_recorded_namespaces_carry_the_opt_in_label() -> None:
    """The fixture models namespace-wide opt-in the way the manifests expect it."""
    namespaces = recorded_namespaces()
    assert namespaces["team-a"]["metadata"]["labels"]["ferry.dev/inject"] == "enabled"
    assert namespaces["team-a"]["metadata"]["annotations"]["ferry.dev/inject"] == "true"
    assert "ferry.dev/inject" not in namespaces["team-b"]["metadata"]["labels"]


OPTED_IN = {NAMESPACE_OPT_IN_LABEL[0]: NAMESPACE_OPT_IN_LABEL[1]}
SCOPING_CASES = [
    # (namespace, its extra labels, pod annotations, entries the API server calls)
    ("team-b", None, None, []),
    ("team-b", None, {}, []),
    ("team-b", None, {"ferry.dev/inject": "true"}, [POD_ENTRY]),
    ("team-b", None, {"ferry.dev/inject": "false"}, []),
    # Any value but "false" reaches Ferry, which reads "True" as true and refuses "yes" with a message.
    ("team-b", None, {"ferry.dev/inject": "True"}, [POD_ENTRY]),
    ("team-b", None, {"ferry.dev/inject": " TRUE "}, [POD_ENTRY]),
    ("team-b", None, {"ferry.dev/inject": "yes"}, [POD_ENTRY]),
    ("team-b", None, {"ferry.dev/inject": "False"}, []),
    ("team-a", OPTED_IN, {"ferry.dev/inject": "FALSE"}, []),
    # Naming secrets is not opting in, but reaches Ferry (through the Ignore entry), which warns that the pod
    # starts without them.
    ("team-b", None, {"ferry.dev/secret-provider-class": "db"}, [WARN_ENTRY]),
    ("team-b", None, {"ferry.dev/objects": "- objectName: db"}, [WARN_ENTRY]),
    ("team-b", None, {"ferry.dev/objects": "- objectName: db", "ferry.dev/inject": "true"}, [POD_ENTRY]),
    ("team-a", OPTED_IN, {"ferry.dev/objects": "- objectName: db"}, [NAMESPACE_ENTRY]),
    ("team-b", None, {"ferry.dev/objects": "- objectName: db", "ferry.dev/inject": "false"}, []),
    ("team-b", None, {"ferry.dev/region": "us-east-1"}, []),
    ("team-a", OPTED_IN, None, [NAMESPACE_ENTRY]),
    ("team-a", OPTED_IN, {"other": "x"}, [NAMESPACE_ENTRY]),
    ("team-a", OPTED_IN, {"ferry.dev/inject": "true"}, [NAMESPACE_ENTRY]),
    ("team-a", OPTED_IN, {"ferry.dev/inject": "false"}, []),
    ("team-a", {"ferry.dev/inject": "disabled"}, {"ferry.dev/inject": "true"}, [POD_ENTRY]),
    ("team-a", {"ferry.dev/inject": "disabled"}, None, []),
    ("kube-system", None, {"ferry.dev/inject": "true"}, []),
    ("kube-system", OPTED_IN, None, []),
    ("kube-public", OPTED_IN, {"ferry.dev/inject": "true"}, []),
    (NAMESPACE, None, {"ferry.dev/inject": "true"}, []),
    (NAMESPACE, OPTED_IN, {"ferry.dev/inject": "true"}, []),
]


@pytest.mark.parametrize(("namespace", "labels", "pod_annotations", "expected"), SCOPING_CASES)
def test_mutating_webhook_scoping(
    base: list[dict[str, Any]],
    namespace: str,
    labels: dict[str, str] | None,
    pod_annotations: dict[str, str] | None,
    expected: list[str],
) -> None:
    assert called_entries(webhooks(base), _namespace(namespace, labels), _pod(pod_annotations)) == expected


def test_each_pod_reaches_ferry_at_most_once(base: list[dict[str, Any]]) -> None:
    hooks = webhooks(base)
    namespaces = [*recorded_namespaces().values(), _namespace(NAMESPACE), _namespace("x", OPTED_IN)]
    values: list[dict[str, str] | None] = [None, {}, *({"ferry.dev/inject": v} for v in ("true", "false", "", "1"))]
    for namespace in namespaces:
        for pod_annotations in values:
            assert len(called_entries(hooks, namespace, _pod(pod_annotations))) <= 1


def test_recorded_admission_pods_are_routed_as_designed(base: list[dict[str, Any]]) -> None:
    """The pods the v1.28 API server actually sent, against the shipped configuration.

    The recording used a single annotation-only entry, under which the
    unannotated pod in team-a (review 7) never reached Ferry although team-a
    opted in namespace-wide. The shipped second entry routes it to Ferry.
    """
    hooks = webhooks(base)
    namespaces = recorded_namespaces()
    admission = FIXTURES / "admission"
    for review_file, expected in (
        ("review-1-ferry-first-call.json", [NAMESPACE_ENTRY]),
        ("review-3-ferry-reinvoked-after-identity-webhook.json", [NAMESPACE_ENTRY]),
        ("review-7-unannotated-pod-identity-webhook-only.json", [NAMESPACE_ENTRY]),
    ):
        request = json.loads((admission / review_file).read_text())["request"]
        pod, namespace = request["object"], namespaces[request["namespace"]]
        assert called_entries(hooks, namespace, pod) == expected, review_file
        # The same pod in a namespace that did not opt in.
        plain = _namespace("team-b")
        annotated = pod["metadata"].get("annotations", {}).get("ferry.dev/inject") == "true"
        assert called_entries(hooks, plain, pod) == ([POD_ENTRY] if annotated else []), review_file


def test_recorded_match_condition_is_equivalent_to_ours(base: list[dict[str, Any]]) -> None:
    """The pod entry's condition agrees with the one a real v1.28 server accepted and applied."""
    recorded = next(
        doc
        for doc in yaml.safe_load_all((FIXTURES / "admission" / "mutatingwebhookconfigurations.yaml").read_text())
        if doc["metadata"]["name"] == "a-ferry"
    )
    theirs = MiniCel(recorded["webhooks"][0]["matchConditions"][0]["expression"])
    ours = [MiniCel(c["expression"]) for c in webhooks(base)[POD_ENTRY]["matchConditions"]]
    for pod_annotations in (None, {}, {"ferry.dev/inject": "true"}, {"ferry.dev/inject": "false"}, {"a": "b"}):
        pod = {"object": _pod(pod_annotations)}
        assert all(c.evaluate(pod) for c in ours) == theirs.evaluate(pod), pod_annotations
