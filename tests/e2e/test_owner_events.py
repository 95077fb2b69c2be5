"""Warnings and denials reach the workload's owner as Events, through the real ReplicaSet controller.

Why it exists: a Deployment's pods are created by the ReplicaSet controller, so
the admission warnings the API server returns go to that controller and nobody
reads them. Ferry writes them as Events on the ReplicaSet, with its own RBAC,
where `kubectl describe replicaset` shows them.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.ferrylib import Ferry, app_container, wait_for


def _deployment(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [app_container()],
                },
            },
        },
    }  # fmt: skip


def _ferry_events(ferry: Ferry, namespace: str) -> list[dict[str, Any]]:
    result = ferry.plane.kubectl("get", "events", "-n", namespace, "-o", "json")
    return [e for e in json.loads(result.stdout)["items"] if e["reason"] in ("FerryWarning", "FerryDenied")]


def test_a_deployment_naming_secrets_without_opting_in_gets_an_event_on_its_replicaset(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("owner-events")
    # Names secrets but never opts in: the pods start without them, and Ferry warns.
    serving_ferry.apply(ns, [_deployment("quiet", {"ferry.dev/secret-provider-class": "db"})], check=True)
    events = wait_for(lambda: _ferry_events(serving_ferry, ns), 60, what="Ferry's Event on the ReplicaSet")
    event = events[0]
    assert event["type"] == "Warning" and event["reason"] == "FerryWarning"
    assert event["involvedObject"]["kind"] == "ReplicaSet"
    assert event["involvedObject"]["name"].startswith("quiet-")
    assert "ferry.dev/inject" in event["message"] and "starts without secrets" in event["message"]
    # `kubectl describe` of the ReplicaSet, where a workload's owner looks, shows it.
    described = serving_ferry.plane.kubectl("describe", "replicaset", "-n", ns, "-l", "app=quiet").stdout
    assert "FerryWarning" in described
    # Two replicas, one warning: deduplicated.
    assert len(_ferry_events(serving_ferry, ns)) == 1
    # And the webhook's log line carries the text, not only a count.
    logged = [e for e in serving_ferry.admission_entries() if e.get("namespace") == ns and e.get("warnings")]
    assert logged and "starts without secrets" in logged[0]["warningText"][0]


def test_a_denied_deployment_gets_ferrys_event_on_its_replicaset(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("owner-denied")
    bad = {"ferry.dev/inject": "true", "ferry.dev/objects": "- objectName: s\n  objectType: nope\n"}
    serving_ferry.apply(ns, [_deployment("broken", bad)], check=True)
    events = wait_for(lambda: _ferry_events(serving_ferry, ns), 60, what="Ferry's denial Event")
    assert events[0]["reason"] == "FerryDenied" and "nope" in events[0]["message"]
    assert events[0]["involvedObject"]["kind"] == "ReplicaSet"
