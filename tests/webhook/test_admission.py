"""The admission policy for one pod: layout, sidecar modes, Job handling, idempotency, reinvocation, denials."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import pytest

from tests.support.pods import make_pod
from tests.support.resolving import admit_request
from webhook.policy.patch import make_pod_patch
from webhook.policy.pipeline import Admission
from webhook.policy.request import PodRequest, is_run_to_completion
from webhook.settings import Settings

Validate = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]

SETTINGS = Settings(default_region="eu-west-1")
OBJECTS = (
    '- objectName: "prod/db"\n  objectType: secretsmanager\n- objectName: "/prod/flags"\n  objectType: ssmparameter\n'
)
IRSA_ENV = [
    {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/app"},
    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
]
IRSA_MOUNT = {
    "name": "aws-iam-token",
    "readOnly": True,
    "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
}
IRSA_VOLUME = {
    "name": "aws-iam-token",
    "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "token"}}]},
}

# Ferry sets it in its own containers (never the node role); not part of the copied identity.
IMDS_OFF = "AWS_EC2_METADATA_DISABLED"


def admit(pod: dict[str, Any], *, native: bool = True, settings: Settings = SETTINGS) -> Admission:
    request = PodRequest.read(pod, pod["metadata"].get("namespace", "team-b"), None)
    return admit_request(request, settings, native_sidecars=native)


def app_pod(**annotations: str) -> dict[str, Any]:
    return make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, **annotations},
        containers=[
            {"name": "web", "image": "registry.example.com/web:1", "ports": [{"containerPort": 8080}]},
            {"name": "worker", "image": "registry.example.com/worker:1"},
        ],
        init_containers=[{"name": "migrate", "image": "registry.example.com/web:1"}],
        securityContext={"runAsUser": 1000, "fsGroup": 2000},
        namespace="team-b",
    )


def names(pod: dict[str, Any], group: str) -> list[str]:
    return [c["name"] for c in pod["spec"].get(group) or []]


def check_patch(before: dict[str, Any], after: dict[str, Any], validate: Validate) -> list[dict[str, Any]]:
    """The patch, applied as the API server would, gives exactly `after`, and a valid Pod."""
    ops = make_pod_patch(before, after)
    assert validate(before, ops) == after
    return ops


def test_injected_layout_with_native_sidecar(patched_pod: Validate) -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    admission = admit(pod, native=True)
    assert admission.outcome == "injected" and admission.reason == "sidecar-native"
    new = admission.pod
    assert names(new, "initContainers") == ["ferry-init", "ferry-sidecar", "migrate"]
    assert names(new, "containers") == ["web", "worker"]
    assert new["spec"]["initContainers"][1]["restartPolicy"] == "Always"
    assert "restartPolicy" not in new["spec"]["initContainers"][0]
    assert new["metadata"]["annotations"]["ferry.dev/status"] == "injected"
    assert new["spec"]["volumes"] == [{"name": "ferry-secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    app_mount = {"name": "ferry-secrets", "mountPath": "/mnt/secrets-store", "readOnly": True}
    for container in new["spec"]["containers"] + new["spec"]["initContainers"][2:]:
        assert container["volumeMounts"] == [app_mount]
    for container in new["spec"]["initContainers"][:2]:
        assert container["securityContext"]["runAsUser"] == 1000
        assert container["volumeMounts"] == [{"name": "ferry-secrets", "mountPath": "/mnt/secrets-store"}]
    check_patch(pod, new, patched_pod)


def test_regular_sidecar_without_native_support(patched_pod: Validate) -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    admission = admit(pod, native=False)
    assert admission.reason == "sidecar-regular" and admission.warnings == ()
    assert names(admission.pod, "initContainers") == ["ferry-init", "migrate"]
    assert names(admission.pod, "containers") == ["web", "worker", "ferry-sidecar"]
    assert "restartPolicy" not in admission.pod["spec"]["containers"][-1]
    check_patch(pod, admission.pod, patched_pod)


def test_no_sidecar_without_refresh(patched_pod: Validate) -> None:
    pod = app_pod()
    admission = admit(pod)
    assert admission.reason == "sidecar-none"
    assert names(admission.pod, "initContainers") == ["ferry-init", "migrate"]
    assert names(admission.pod, "containers") == ["web", "worker"]
    check_patch(pod, admission.pod, patched_pod)


@pytest.mark.parametrize(
    "marker",
    [
        {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "1", "controller": True}]},
        {"labels": {"batch.kubernetes.io/job-name": "j"}},
        {"labels": {"job-name": "j"}},
    ],
)
def test_job_pods_get_no_regular_sidecar_and_a_warning(patched_pod: Validate, marker: dict[str, Any]) -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    pod["metadata"].update(copy.deepcopy(marker))
    pod["spec"]["restartPolicy"] = "Never"
    assert is_run_to_completion(pod)
    admission = admit(pod, native=False)
    assert admission.reason == "sidecar-none"
    assert "ferry-sidecar" not in names(admission.pod, "containers") + names(admission.pod, "initContainers")
    assert len(admission.warnings) == 1 and "no refresh sidecar in this run-to-completion pod" in admission.warnings[0]
    check_patch(pod, admission.pod, patched_pod)
    # With native sidecars a Job completes anyway, so it gets one.
    native = admit(pod, native=True)
    assert native.reason == "sidecar-native" and native.warnings == ()


def test_selected_containers_only(patched_pod: Validate) -> None:
    pod = app_pod(**{"ferry.dev/containers": "worker", "ferry.dev/mount-path": "/secrets"})
    new = admit(pod).pod
    by_name = {c["name"]: c for c in new["spec"]["containers"] + new["spec"]["initContainers"]}
    assert "volumeMounts" not in by_name["web"] and "volumeMounts" not in by_name["migrate"]
    assert by_name["worker"]["volumeMounts"] == [{"name": "ferry-secrets", "mountPath": "/secrets", "readOnly": True}]
    assert by_name["ferry-init"]["args"] == ["init", "--dir", "/secrets"]
    check_patch(pod, new, patched_pod)


def test_the_input_pod_is_never_modified() -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    pod["spec"]["containers"][0]["env"] = [dict(e) for e in IRSA_ENV]
    pod["spec"]["containers"][0]["volumeMounts"] = [dict(IRSA_MOUNT)]
    pod["spec"]["volumes"] = [IRSA_VOLUME]
    snapshot = copy.deepcopy(pod)
    for native in (True, False):
        injected = admit(pod, native=native).pod
        assert pod == snapshot
        admit(injected)  # reinvocation
        assert pod == snapshot


def test_resending_the_patched_pod_changes_nothing() -> None:
    for native in (True, False):
        pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
        pod["spec"]["containers"][0]["env"] = [dict(e) for e in IRSA_ENV]
        pod["spec"]["containers"][0]["volumeMounts"] = [dict(IRSA_MOUNT)]
        pod["spec"]["volumes"] = [IRSA_VOLUME]
        first = admit(pod, native=native)
        patched = jsonpatch.apply_patch(pod, make_pod_patch(pod, first.pod))
        second = admit(patched, native=native)
        assert second.outcome == "reinvoked"
        assert make_pod_patch(patched, second.pod) == []
        assert second.pod == patched


def test_identity_present_before_ferry_is_copied(patched_pod: Validate) -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    pod["spec"]["containers"][0]["env"] = [dict(e) for e in IRSA_ENV]
    pod["spec"]["containers"][0]["volumeMounts"] = [dict(IRSA_MOUNT)]
    pod["spec"]["volumes"] = [IRSA_VOLUME]
    new = admit(pod).pod
    for own in new["spec"]["initContainers"][:2]:
        assert [e for e in own["env"] if e["name"].startswith("AWS_") and e["name"] != IMDS_OFF] == IRSA_ENV
        assert own["volumeMounts"][-1] == IRSA_MOUNT
    check_patch(pod, new, patched_pod)


def test_reinvocation_after_an_identity_webhook_updates_only_ferrys_containers(patched_pod: Validate) -> None:
    for native in (True, False):
        pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
        injected = admit(pod, native=native).pod
        # The EKS pod identity webhook runs next and adds IRSA to the app containers.
        after_identity = copy.deepcopy(injected)
        after_identity["spec"]["volumes"].append(IRSA_VOLUME)
        for app in after_identity["spec"]["containers"]:
            if app["name"] != "ferry-sidecar":
                app["env"] = [dict(e) for e in IRSA_ENV]
                app["volumeMounts"].append(dict(IRSA_MOUNT))
        again = admit(after_identity, native=native)
        assert again.outcome == "reinvoked" and again.reason == "identity-refreshed"
        ops = check_patch(after_identity, again.pod, patched_pod)
        assert ops, "Ferry's containers must get the identity"
        own_paths = (
            {"/spec/initContainers/0", "/spec/initContainers/1"}
            if native
            else {
                "/spec/initContainers/0",
                "/spec/containers/2",
            }
        )
        for op in ops:
            assert op["op"] == "add"
            assert any(op["path"].startswith(prefix + "/") for prefix in own_paths), op
        for own in again.pod["spec"]["initContainers"] + again.pod["spec"]["containers"]:
            if own["name"].startswith("ferry-"):
                assert [e for e in own["env"] if e["name"].startswith("AWS_") and e["name"] != IMDS_OFF] == IRSA_ENV
                assert IRSA_MOUNT in own["volumeMounts"]
        # And a third call changes nothing more.
        final = jsonpatch.apply_patch(after_identity, ops)
        assert make_pod_patch(final, admit(final, native=native).pod) == []


def test_a_user_set_status_on_a_pod_without_ferry_containers_is_ignored() -> None:
    # Anyone can write the annotation; only Ferry's containers show Ferry injected the pod.
    pod = app_pod(**{"ferry.dev/status": "injected"})
    admission = admit(pod)
    assert admission.outcome == "injected"
    assert [c["name"] for c in admission.pod["spec"]["initContainers"]][0] == "ferry-init"
    opted_out = make_pod({"ferry.dev/inject": "false", "ferry.dev/status": "injected"}, namespace="team-b")
    assert admit(opted_out).outcome == "skipped"


def test_a_user_set_status_cannot_let_a_pod_that_names_bad_secrets_start() -> None:
    pod = app_pod(**{"ferry.dev/status": "injected", "ferry.dev/objects": "- objectName: [oops"})
    assert admit(pod).outcome == "denied"


def test_windows_pods_are_denied_saying_the_image_is_linux() -> None:
    pod = app_pod()
    pod["spec"]["os"] = {"name": "windows"}
    admission = admit(pod)
    assert admission.outcome == "denied" and admission.reason == "not-linux"
    assert admission.message is not None and "Linux-only" in admission.message and "'windows'" in admission.message
    pod["spec"]["os"] = {"name": "linux"}
    assert admit(pod).outcome == "injected"


def test_ferry_containers_get_no_api_token_and_the_app_keeps_its_own() -> None:
    token_mount = {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    pod = app_pod()
    for container in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        container["volumeMounts"] = [*container.get("volumeMounts", []), dict(token_mount)]
    injected = admit(pod).pod
    assert injected["spec"]["automountServiceAccountToken"] is False
    for container in injected["spec"]["initContainers"] + injected["spec"]["containers"]:
        has_token = token_mount in container.get("volumeMounts", [])
        assert has_token == (not container["name"].startswith("ferry-")), container["name"]


def test_a_limit_range_below_ferrys_limits_denies_naming_it_and_the_setting() -> None:
    small = {
        "metadata": {"name": "small", "namespace": "team-b"},
        "spec": {
            "limits": [{"type": "Pod", "max": {"memory": "1Mi"}}, {"type": "Container", "max": {"memory": "48Mi"}}]
        },
    }
    admission = admit_request(PodRequest.read(app_pod(), "team-b", None), SETTINGS, limit_ranges=[small])
    assert admission.outcome == "denied" and admission.reason == "limit-range"
    assert admission.message is not None
    assert "LimitRange small in namespace team-b: spec.limits[1].max.memory is 48Mi" in admission.message
    assert "FERRY_FETCHER_MEMORY_LIMIT" in admission.message


def test_foreign_status_values_are_denied() -> None:
    admission = admit(app_pod(**{"ferry.dev/status": "pending"}))
    assert admission.outcome == "denied"
    assert admission.message == "ferry.dev/status: 'pending' is written by Ferry (only 'injected'); remove it"


def test_denied_and_skipped_pods_are_returned_unchanged() -> None:
    pod = app_pod(**{"ferry.dev/mount-path": "/etc"})
    denial = admit(pod)
    assert denial.outcome == "denied" and denial.pod is pod and denial.message
    skipped = make_pod(namespace="team-b")
    assert admit(skipped).pod is skipped


def test_the_pod_spec_holds_names_never_secret_values() -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    new = admit(pod).pod
    text = json.dumps(new)
    wire = json.loads(new["spec"]["initContainers"][0]["env"][0]["value"])
    assert [o["objectName"] for o in wire["objects"]] == ["prod/db", "/prod/flags"]
    assert "SecretString" not in text and "secretValue" not in text.lower()
    for own in new["spec"]["initContainers"][:2]:
        assert {e["name"] for e in own["env"]} == {
            "FERRY_SPEC",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONUNBUFFERED",
            "AWS_EC2_METADATA_DISABLED",
        }


def test_patch_is_short_and_readable() -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "1m"})
    ops = make_pod_patch(pod, admit(pod).pod)
    assert [(op["op"], op["path"]) for op in ops] == [
        ("add", "/metadata/annotations/ferry.dev~1status"),
        ("add", "/spec/volumes"),
        ("add", "/spec/automountServiceAccountToken"),
        ("add", "/spec/containers/0/volumeMounts"),
        ("add", "/spec/containers/1/volumeMounts"),
        ("add", "/spec/initContainers/0/volumeMounts"),
        ("add", "/spec/initContainers/0"),
        ("add", "/spec/initContainers/1"),
    ]


def test_patch_handles_pods_without_init_containers_or_annotations(patched_pod: Validate) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-b"},
        "spec": {"containers": [{"name": "web", "image": "i"}]},
    }
    ns = {
        "metadata": {
            "name": "team-b",
            "labels": {"ferry.dev/inject": "enabled"},
            "annotations": {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "s"},
        }
    }
    spc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "s", "namespace": "team-b"},
        "spec": {"provider": "aws", "parameters": {"objects": OBJECTS, "region": "eu-west-1"}},
    }
    admission = admit_request(PodRequest.read(pod, "team-b", ns), SETTINGS, spc_lookup=lambda n, s: spc)
    assert admission.outcome == "injected"
    check_patch(pod, admission.pod, patched_pod)


def test_pod_level_resources_hold_ferrys_sidecar() -> None:
    pod = app_pod(**{"ferry.dev/refresh-interval": "5m"})
    pod["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    injected = admit(pod).pod
    assert injected["spec"]["resources"] == {  # the requests have room for the sidecar's 10m / 32Mi: unchanged
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "320Mi"},  # the sidecar's 64Mi limit added, so the app keeps its own
    }
    assert pod["spec"]["resources"]["requests"]["cpu"] == "100m", "the pod as sent is not modified"
