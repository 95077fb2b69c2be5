"""Pods through the real API server: what Ferry injects, refuses and never sees.

Why it exists: the API server, not a unit test, decides which pods reach Ferry
(namespaceSelector, matchConditions CEL), whether the patched pod is valid
(full pod validation, the ServiceAccount plugin) and what a user sees when
Ferry says no (kubectl's error text). These tests create real objects and read
back what was stored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support.ferrylib import (
    Ferry,
    app_container,
    container_names,
    inline_objects,
    is_injected,
    opted_pod,
    pod,
    spc,
    wait_for,
)


def _entries_for(ferry: Ferry, namespace: str) -> list[dict[str, Any]]:
    return [entry for entry in ferry.admission_entries() if entry.get("namespace") == namespace]


def admitted_when_ready(ferry: Ferry, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create `manifest` once Ferry's watch cache has caught up (dry-run until injected)."""

    def injected_dry_run() -> bool:
        try:
            return is_injected(ferry.create_pod(namespace, manifest, dry_run=True))
        except ApiException:
            return False

    wait_for(injected_dry_run, 30, what="Ferry to see the new SecretProviderClass or namespace")
    return ferry.create_pod(namespace, manifest)


def test_inline_objects_are_injected_and_stored(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("inline")
    stored = serving_ferry.create_pod(ns, opted_pod("app", "db", "api-key"))
    init, containers = container_names(stored)
    assert init[0] == "ferry-init"
    assert containers == ["app"]
    assert stored["metadata"]["annotations"]["ferry.dev/status"] == "injected"
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["ferry-secrets"]["emptyDir"]["medium"] == "Memory"
    app = stored["spec"]["containers"][0]
    assert {"name": "ferry-secrets", "mountPath": "/mnt/secrets-store", "readOnly": True}.items() <= next(
        m for m in app["volumeMounts"] if m["name"] == "ferry-secrets"
    ).items()
    spec = json.loads(next(e["value"] for e in stored["spec"]["initContainers"][0]["env"] if e["name"] == "FERRY_SPEC"))
    assert [o["objectName"] for o in spec["objects"]] == ["db", "api-key"]


def test_secret_provider_class_by_name(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("spc")
    serving_ferry.apply(ns, [spc("app-secrets", "from-spc")], check=True)
    manifest = pod("app", annotations={"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "app-secrets"})
    stored = admitted_when_ready(serving_ferry, ns, manifest)
    spec = json.loads(next(e["value"] for e in stored["spec"]["initContainers"][0]["env"] if e["name"] == "FERRY_SPEC"))
    assert [o["objectName"] for o in spec["objects"]] == ["from-spc"]


def test_namespace_opt_in_and_a_pod_that_opts_out(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace(
        "nsopt",
        labels={"ferry.dev/inject": "enabled"},
        annotations={
            "ferry.dev/inject": "true",
            "ferry.dev/secret-provider-class": "shared",
            "ferry.dev/region": "eu-west-1",
        },
    )
    serving_ferry.apply(ns, [spc("shared", "team-secret", region="eu-west-1")], check=True)
    stored = admitted_when_ready(serving_ferry, ns, pod("plain"))
    assert is_injected(stored)
    opted_out = serving_ferry.create_pod(ns, pod("out", annotations={"ferry.dev/inject": "false"}))
    assert not is_injected(opted_out)
    # The opt-out never reached Ferry: matchConditions filtered it in the API server.
    assert not [e for e in _entries_for(serving_ferry, ns) if e.get("pod") == "out"]


def test_unannotated_pod_never_reaches_ferry(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("plain")
    stored = serving_ferry.create_pod(ns, pod("untouched"))
    assert not is_injected(stored)
    assert "ferry.dev/status" not in (stored["metadata"].get("annotations") or {})
    # Sanity: Ferry does log the namespace when a pod there opts in.
    serving_ferry.create_pod(ns, opted_pod("asks"))
    # The log has a line per admission (metrics name no namespace): "untouched" was never sent to Ferry.
    entries = _entries_for(serving_ferry, ns)
    assert {e["pod"] for e in entries} == {"asks"}
    assert {e["outcome"] for e in entries} == {"injected"}


@pytest.mark.parametrize("system_ns", ["kube-system", "ferry-system"])
def test_system_namespaces_untouched_even_when_labelled(serving_ferry: Ferry, system_ns: str) -> None:
    plane = serving_ferry.plane
    plane.kubectl("label", "namespace", system_ns, "ferry.dev/inject=enabled", "--overwrite")
    try:
        name = f"asks-{system_ns}"
        stored = serving_ferry.create_pod(system_ns, opted_pod(name))
        assert not is_injected(stored)
        assert not [e for e in _entries_for(serving_ferry, system_ns) if e.get("pod") == name]
    finally:
        plane.kubectl("delete", "pod", f"asks-{system_ns}", "-n", system_ns, "--wait=false", check=False)
        plane.kubectl("label", "namespace", system_ns, "ferry.dev/inject-")


def test_server_side_dry_run_is_injected_and_not_stored(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("dryrun")
    result = serving_ferry.apply(ns, [opted_pod("preview")], "--dry-run=server", "-o", "json", check=True)
    previewed = json.loads(result.stdout)
    assert is_injected(previewed)
    missing = serving_ferry.plane.kubectl("get", "pod", "preview", "-n", ns, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    assert any(e.get("dryRun") for e in _entries_for(serving_ferry, ns))


_DEEP = "a:\n" + "".join("  " * i + f"- b{i}:\n" for i in range(1, 12))

# (case id, annotations beside inject/region, words the denial must contain)
BAD_INPUT = [
    (
        # A tenant's own API Gateway stage is under amazonaws.com, and would receive the pod's IRSA token.
        "endpoint-api-gateway",
        {
            "ferry.dev/objects": inline_objects("s"),
            "ferry.dev/aws-endpoints": "sts=https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        },
        ["ferry.dev/aws-endpoints", "not allowed by the webhook"],
    ),
    ("unknown-object-type", {"ferry.dev/objects": "- objectName: s\n  objectType: nope\n"}, ["objectType", "nope"]),
    ("bad-arn", {"ferry.dev/objects": "- objectName: 'arn:aws:secretsmanager:nope'\n"}, ["ARN"]),
    (
        "both-versions",
        {
            "ferry.dev/objects": "- objectName: s\n  objectType: ssmparameter\n"
            '  objectVersion: "1"\n  objectVersionLabel: prod\n'
        },
        ["objectVersion"],
    ),
    (
        "alias-traversal",
        {"ferry.dev/objects": "- objectName: s\n  objectType: secretsmanager\n  objectAlias: ../etc\n"},
        ["objectAlias"],
    ),
    (
        "alias-absolute",
        {"ferry.dev/objects": "- objectName: s\n  objectType: secretsmanager\n  objectAlias: /etc/passwd\n"},
        ["objectAlias"],
    ),
    (
        "duplicate-files",
        {
            "ferry.dev/objects": "- objectName: a/b\n  objectType: secretsmanager\n"
            "- objectName: a_b\n  objectType: secretsmanager\n"
        },
        ["a_b"],
    ),
    ("yaml-too-large", {"ferry.dev/objects": "#" + "x" * 70_000 + "\n- objectName: s\n"}, ["bytes"]),
    ("yaml-too-deep", {"ferry.dev/objects": _DEEP}, ["deeper"]),
    ("refresh-below-floor", {"ferry.dev/objects": inline_objects("s"), "ferry.dev/refresh-interval": "1s"}, ["floor"]),
    (
        "spc-and-inline",
        {"ferry.dev/objects": inline_objects("s"), "ferry.dev/secret-provider-class": "x"},
        ["never guesses"],
    ),
    ("missing-spc", {"ferry.dev/secret-provider-class": "does-not-exist"}, ["does-not-exist"]),
    (
        "unknown-annotation",
        {"ferry.dev/objects": inline_objects("s"), "ferry.dev/regoin": "us-east-1"},
        ["did you mean"],
    ),
    ("nothing-named", {}, ["no secrets are named"]),
    (
        "bad-mount-path",
        {"ferry.dev/objects": inline_objects("s"), "ferry.dev/mount-path": "relative/dir"},
        ["mount-path"],
    ),
]


@pytest.mark.parametrize(("case", "annotations", "words"), BAD_INPUT, ids=[case for case, _, _ in BAD_INPUT])
def test_kubectl_shows_ferrys_denial(
    serving_ferry: Ferry, case: str, annotations: dict[str, str], words: list[str]
) -> None:
    ns = _denial_namespace(serving_ferry)
    manifest = pod(case, annotations={"ferry.dev/inject": "true", "ferry.dev/region": "us-east-1", **annotations})
    result = serving_ferry.plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert 'admission webhook "pods.ferry.dev" denied the request' in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert len(result.stderr) < 4096  # bounded, whatever the input size
    assert "Traceback" not in result.stderr


_DENIAL_NS: dict[str, str] = {}


def _denial_namespace(ferry: Ferry) -> str:
    if "ns" not in _DENIAL_NS:
        _DENIAL_NS["ns"] = ferry.create_namespace("denials")
    return _DENIAL_NS["ns"]


def test_denial_through_the_python_client_is_a_403_with_the_message(serving_ferry: Ferry) -> None:
    ns = _denial_namespace(serving_ferry)
    manifest = pod("client-denied", annotations={"ferry.dev/inject": "true", "ferry.dev/region": "us-east-1"})
    with pytest.raises(ApiException) as raised:
        serving_ferry.create_pod(ns, manifest)
    assert raised.value.status == 400 or raised.value.status == 403
    assert "no secrets are named" in str(raised.value.body)


def test_multi_container_pod_mounts_only_where_asked(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("containers")
    manifest = opted_pod("two", extra={"ferry.dev/containers": "web"})
    manifest["spec"]["containers"] = [app_container("web"), app_container("worker")]
    stored = serving_ferry.create_pod(ns, manifest)
    mounts = {c["name"]: [m["name"] for m in c.get("volumeMounts") or []] for c in stored["spec"]["containers"]}
    assert "ferry-secrets" in mounts["web"]
    assert "ferry-secrets" not in mounts["worker"]


def test_a_namespace_endpoint_outside_the_allow_list_is_refused_naming_the_namespace(serving_ferry: Ferry) -> None:
    """The namespace annotation is read from Ferry's view of the namespace, and held to the same list."""
    ns = serving_ferry.create_namespace(
        "endpoints",
        annotations={"ferry.dev/aws-endpoints": "secretsmanager=https://collector-1.us-east-1.elb.amazonaws.com"},
    )
    manifest = pod(
        "ep",
        annotations={
            "ferry.dev/inject": "true",
            "ferry.dev/region": "us-east-1",
            "ferry.dev/objects": inline_objects("s"),
        },
    )
    seen: list[str] = []

    def refused_for_the_namespace() -> bool:
        try:
            serving_ferry.create_pod(ns, manifest, dry_run=True)
        except ApiException as exc:
            seen.append(str(exc.body))
            return f"namespace {ns} annotation ferry.dev/aws-endpoints" in str(exc.body)
        return False

    wait_for(refused_for_the_namespace, 30, what="Ferry to see the namespace's annotation")
    assert "not allowed by the webhook" in seen[-1] and len(seen[-1]) < 4096
