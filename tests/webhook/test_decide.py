"""Whether a pod is injected: pod over namespace, opt-in, exclusions, and denials that say what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.pods import make_pod
from tests.webhook.test_resolve import SM_OBJECTS, namespace
from webhook.policy.decide import Denial, Reinvocation, Skip
from webhook.policy.decide import decide_injection as decide
from webhook.policy.request import PodRequest
from webhook.settings import Settings


def decide_injection(
    pod: dict[str, Any], namespace: str, namespace_obj: dict[str, Any] | None, settings: Settings
) -> Skip | Denial | Reinvocation | None:
    return decide(PodRequest.read(pod, namespace, namespace_obj), settings)


def test_pod_annotation_wins_over_namespace(settings: Settings) -> None:
    ns_on = namespace("team-b", **{"ferry.dev/inject": "true"})
    ns_off = namespace("team-b", **{"ferry.dev/inject": "false"})
    opted_out = make_pod({"ferry.dev/inject": "false"}, namespace="team-b")
    opted_in = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": SM_OBJECTS}, namespace="team-b")
    assert decide_injection(opted_out, "team-b", ns_on, settings) == Skip("opted-out")
    assert decide_injection(opted_in, "team-b", ns_off, settings) is None


def test_namespace_opt_in_applies_to_pods_that_name_secrets(settings: Settings) -> None:
    ns_on = namespace("team-b", **{"ferry.dev/inject": "true"})
    assert (
        decide_injection(make_pod({"ferry.dev/objects": SM_OBJECTS}, namespace="team-b"), "team-b", ns_on, settings)
        is None
    )
    # Nothing named by the pod or the namespace: the pod did not ask for anything.
    assert decide_injection(make_pod(namespace="team-b"), "team-b", ns_on, settings) == Skip("nothing-named")
    ns_with_spc = namespace("team-b", **{"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"})
    assert decide_injection(make_pod(namespace="team-b"), "team-b", ns_with_spc, settings) is None


def test_not_requested(settings: Settings) -> None:
    assert decide_injection(make_pod(namespace="team-b"), "team-b", None, settings) == Skip("not-requested")
    skip = decide_injection(make_pod({"ferry.dev/objects": SM_OBJECTS}, namespace="team-b"), "team-b", None, settings)
    assert isinstance(skip, Skip) and skip.reason == "not-requested"
    assert "ferry.dev/objects set but ferry.dev/inject is not" in skip.warnings[0]


@pytest.mark.parametrize("ns", ["kube-system", "kube-public", "ferry-system", "monitoring"])
def test_excluded_namespaces_are_never_injected(ns: str) -> None:
    settings = Settings(excluded_namespaces=frozenset({"monitoring"}))
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": SM_OBJECTS}, namespace=ns)
    skip = decide_injection(pod, ns, namespace(ns, **{"ferry.dev/inject": "true"}), settings)
    assert isinstance(skip, Skip) and skip.reason == "excluded-namespace"
    assert f"never injects in namespace {ns}" in skip.warnings[0]


def test_invalid_inject_values_are_denied(settings: Settings) -> None:
    denial = decide_injection(make_pod({"ferry.dev/inject": "yes"}, namespace="team-b"), "team-b", None, settings)
    assert denial == Denial("invalid-annotation", 'ferry.dev/inject: \'yes\' must be "true" or "false"')
    denial = decide_injection(
        make_pod(namespace="team-b"), "team-b", namespace("team-b", **{"ferry.dev/inject": "on"}), settings
    )
    assert isinstance(denial, Denial)
    assert denial.message.startswith("namespace team-b annotation ferry.dev/inject: 'on'")
    assert (
        decide_injection(make_pod({"ferry.dev/inject": "True"}, namespace="team-b"), "team-b", None, settings) is None
    )


def test_unknown_ferry_annotations_are_denied_with_a_suggestion(settings: Settings) -> None:
    pod = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/refresh-intervall": "1m", "ferry.dev/zzz": "1"}, namespace="team-b"
    )
    denial = decide_injection(pod, "team-b", None, settings)
    assert isinstance(denial, Denial) and denial.reason == "unknown-annotation"
    assert "ferry.dev/refresh-intervall: is not a Ferry annotation; did you mean ferry.dev/refresh-interval?" in (
        denial.message
    )
    assert "ferry.dev/zzz: is not a Ferry annotation; known keys:" in denial.message
    # Even a pod that did not opt in is told: a typo must never silently skip injection.
    assert isinstance(
        decide_injection(make_pod({"ferry.dev/injct": "true"}, namespace="team-b"), "team-b", None, settings), Denial
    )


def test_a_namespace_annotation_opts_in_only_with_the_routing_label(settings: Settings) -> None:
    # The API server sends Ferry a namespace's pods only with the label; the webhook reads the annotation the same way.
    pod = make_pod({"ferry.dev/objects": SM_OBJECTS}, namespace="team-b")
    unlabelled = namespace("team-b", **{"ferry.dev/inject": "true"})
    del unlabelled["metadata"]["labels"]
    skip = decide_injection(pod, "team-b", unlabelled, settings)
    assert isinstance(skip, Skip) and skip.reason == "not-requested"
    assert "not the label ferry.dev/inject=enabled" in skip.warnings[0]
    assert decide_injection(pod, "team-b", namespace("team-b", **{"ferry.dev/inject": "true"}), settings) is None


def test_a_wrong_namespace_label_value_is_named_with_the_value_it_must_have(settings: Settings) -> None:
    # `ferry.dev/inject=true` is what people write; the API server routes only `enabled` (namespaceSelector).
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    labelled_true = namespace("team-b", **{"ferry.dev/inject": "true"})
    labelled_true["metadata"]["labels"] = {"ferry.dev/inject": "true"}
    skip = decide_injection(pod, "team-b", labelled_true, settings)
    assert isinstance(skip, Skip) and skip.reason == "not-requested"
    assert "label `ferry.dev/inject` is 'true'; it must be 'enabled'" in skip.warnings[0]
    assert "not the label" not in skip.warnings[0]
    # A huge label value is cut, so the message stays bounded.
    labelled_true["metadata"]["labels"] = {"ferry.dev/inject": "x" * 5000}
    skip = decide_injection(pod, "team-b", labelled_true, settings)
    assert isinstance(skip, Skip) and len(skip.warnings[0]) < 600
