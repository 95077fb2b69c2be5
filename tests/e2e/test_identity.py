"""Reinvocation: Ferry's containers get the pod's AWS identity exactly once.

Why it exists: the identity webhooks of EKS run before or after Ferry
depending on configuration names, and the API server reinvokes Ferry
(`reinvocationPolicy: IfNeeded`) when a later webhook changed the pod. Only the
real API server shows what the containers end up with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.identitywebhooks import ROLE_ARN, MutatingServer, add_irsa, add_pod_identity
from tests.support.ferrylib import Ferry, opted_pod

CASES = {
    # configuration names sort before / after "ferry", so the API server calls them in that order
    "irsa-before": ("aaa-e2e-irsa", add_irsa, "AWS_ROLE_ARN", ROLE_ARN),
    "irsa-after": ("zzz-e2e-irsa", add_irsa, "AWS_ROLE_ARN", ROLE_ARN),
    "pod-identity-before": ("aaa-e2e-pod-identity", add_pod_identity, "AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
    "pod-identity-after": ("zzz-e2e-pod-identity", add_pod_identity, "AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
}


@pytest.fixture(params=sorted(CASES))
def identity_case(request: pytest.FixtureRequest, serving_ferry: Ferry) -> Iterator[tuple[str, str, Any]]:
    config_name, mutate, env_name, env_value = CASES[request.param]
    server = MutatingServer(mutate)
    label = ("e2e.ferry.dev/identity", request.param)
    ns = serving_ferry.create_namespace(request.param, labels=dict([label]))
    plane = serving_ferry.plane
    plane.kubectl("apply", "-f", "-", input=json.dumps(server.configuration(config_name, label)))
    try:
        yield ns, env_name, (server, env_value)
    finally:
        plane.kubectl("delete", "mutatingwebhookconfiguration", config_name, check=False)
        server.close()


def _env(container: dict[str, Any]) -> list[str]:
    return [entry["name"] for entry in container.get("env") or []]


def _create_when_identity_webhook_serves(
    ferry: Ferry, ns: str, manifest: dict[str, Any], ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    # A new webhook configuration takes effect in the API server within about a second: retry a dry run.
    from tests.support.ferrylib import wait_for

    wait_for(lambda: ready(ferry.create_pod(ns, manifest, dry_run=True)), 30, what="the identity webhook to be called")
    return ferry.create_pod(ns, manifest)


def test_ferry_containers_get_the_identity_exactly_once(
    serving_ferry: Ferry, identity_case: tuple[str, str, Any]
) -> None:
    ns, env_name, (server, env_value) = identity_case
    manifest = opted_pod("app", "db", extra={"ferry.dev/refresh-interval": "5m"})

    def app_has_identity(stored: dict[str, Any]) -> bool:
        return env_name in _env(stored["spec"]["containers"][0])

    stored = _create_when_identity_webhook_serves(serving_ferry, ns, manifest, app_has_identity)
    ferry_containers = [c for c in stored["spec"]["initContainers"] if c["name"] in ("ferry-init", "ferry-sidecar")]
    assert [c["name"] for c in ferry_containers] == ["ferry-init", "ferry-sidecar"]
    app = stored["spec"]["containers"][0]
    token_var = (
        "AWS_WEB_IDENTITY_TOKEN_FILE" if env_name == "AWS_ROLE_ARN" else "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    )
    app_token = next(e["value"] for e in app["env"] if e["name"] == token_var)
    app_mount = next(m for m in app["volumeMounts"] if app_token.startswith(m["mountPath"] + "/"))
    for container in ferry_containers:
        names = _env(container)
        assert names.count(env_name) == 1, (container["name"], names)
        assert names.count(token_var) == 1, (container["name"], names)
        if env_value:
            assert next(e["value"] for e in container["env"] if e["name"] == env_name) == env_value
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == app_mount["mountPath"]]
        assert len(mounts) == 1 and mounts[0]["name"] == app_mount["name"], container["volumeMounts"]
    assert server.calls >= 1
