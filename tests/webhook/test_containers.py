"""One builder per object: the volume, the fetcher containers, identity propagation."""

from __future__ import annotations

import json
from typing import Any

from fetcher.contract import SPEC_ENV_VAR, build_spec, spec_from_json
from webhook.policy.containers import build_init_container, build_sidecar
from webhook.policy.identity import Identity, apply_identity, find_identity
from webhook.policy.volumes import VOLUME_NAME, build_app_mount, build_volume
from webhook.settings import Settings

SPEC = build_spec(
    objects='- objectName: "prod/db"\n  objectType: secretsmanager\n  jmesPath:\n    - path: password\n'
    "      objectAlias: db-password\n",
    region="eu-west-1",
    refresh_interval="1m",
    file_uid=1000,
    file_gid=2000,
)

IRSA_ENV = [
    {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
    {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
    {"name": "AWS_REGION", "value": "eu-west-1"},
    {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/app"},
    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
]
IRSA_MOUNT = {
    "name": "aws-iam-token",
    "readOnly": True,
    "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
}
POD_IDENTITY_ENV = [
    {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"},
    {
        "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
    },
]
POD_IDENTITY_MOUNT = {
    "name": "eks-pod-identity-token",
    "readOnly": True,
    "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount",
}
SA_MOUNT = {"name": "kube-api-access", "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}


def test_volume_is_tmpfs_with_a_size_limit() -> None:
    assert build_volume(Settings(volume_size_limit="4Mi")) == {
        "name": VOLUME_NAME,
        "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"},
    }
    assert build_app_mount("/mnt/x") == {"name": VOLUME_NAME, "mountPath": "/mnt/x", "readOnly": True}


def test_init_container_runs_the_fetcher_with_the_spec_in_one_env_var() -> None:
    settings = Settings(fetcher_image="registry.example.com/fetcher:9", fetcher_pull_policy="Always")
    container = build_init_container(SPEC, settings, mount_path="/mnt/secrets-store", run_as_user=1000)
    assert container["name"] == "ferry-init"
    assert container["image"] == "registry.example.com/fetcher:9" and container["imagePullPolicy"] == "Always"
    assert container["command"] == ["python", "-m", "fetcher"]
    assert container["args"] == ["init", "--dir", "/mnt/secrets-store"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert spec_from_json(env[SPEC_ENV_VAR]) == SPEC
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert container["volumeMounts"] == [{"name": VOLUME_NAME, "mountPath": "/mnt/secrets-store"}]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["resources"] == settings.fetcher_resources()
    assert "restartPolicy" not in container


def test_injected_containers_meet_the_restricted_pod_security_standard() -> None:
    for container in (
        build_init_container(SPEC, Settings(), mount_path="/m", run_as_user=4242),
        build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=4242, native=True),
        build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=4242, native=False),
    ):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 4242
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["readOnlyRootFilesystem"] is True
        assert set(container["resources"]) == {"requests", "limits"}


def test_sidecar_differs_from_init_only_by_mode() -> None:
    init = build_init_container(SPEC, Settings(), mount_path="/m", run_as_user=1)
    native = build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=1, native=True)
    regular = build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=1, native=False)
    assert native.pop("restartPolicy") == "Always"
    assert native == regular
    assert regular["name"] == "ferry-sidecar" and regular["args"] == ["sidecar", "--dir", "/m"]
    assert {k: v for k, v in regular.items() if k not in ("name", "args")} == {
        k: v for k, v in init.items() if k not in ("name", "args")
    }


def test_spec_env_carries_names_never_values() -> None:
    container = build_init_container(SPEC, Settings(), mount_path="/m", run_as_user=1)
    wire = json.loads(container["env"][0]["value"])
    assert wire["objects"][0]["objectName"] == "prod/db"
    assert set(wire) <= {
        "v",
        "objects",
        "region",
        "failoverRegion",
        "pathTranslation",
        "refreshSeconds",
        "fileUid",
        "fileGid",
        "notify",
    }


# --- identity -----------------------------------------------------------------


def container(
    name: str, env: list[dict[str, Any]] | None = None, mounts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"name": name, "image": "i", "env": env or [], "volumeMounts": mounts or []}


def test_irsa_env_and_token_mount_are_found() -> None:
    identity = find_identity([container("app", IRSA_ENV + [{"name": "OTHER", "value": "x"}], [SA_MOUNT, IRSA_MOUNT])])
    assert [e["name"] for e in identity.env] == [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_STS_REGIONAL_ENDPOINTS",
    ]
    assert identity.mounts == (IRSA_MOUNT,)


def test_pod_identity_env_and_token_mount_are_found() -> None:
    mount = dict(POD_IDENTITY_MOUNT, readOnly=False)
    identity = find_identity([container("app", POD_IDENTITY_ENV, [mount])])
    assert [e["name"] for e in identity.env] == [
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ]
    assert identity.mounts == (POD_IDENTITY_MOUNT,)  # copied read-only


def test_identity_comes_from_the_first_container_with_credentials() -> None:
    regionless = container("sidecar", [{"name": "AWS_REGION", "value": "us-east-1"}])
    with_role = container("app", IRSA_ENV, [IRSA_MOUNT])
    identity = find_identity([regionless, with_role])
    assert {e["name"]: e["value"] for e in identity.env}["AWS_REGION"] == "eu-west-1"
    assert find_identity([container("plain")]) == Identity()
    assert not find_identity([])


def test_token_mount_is_the_deepest_parent_of_the_token_file() -> None:
    shallow = {"name": "all-secrets", "mountPath": "/var/run/secrets"}
    deep = dict(IRSA_MOUNT)
    sibling = {"name": "eks-ish", "mountPath": "/var/run/secrets/eks.amazonaws.com/service"}
    identity = find_identity([container("app", IRSA_ENV, [shallow, sibling, deep])])
    assert [m["name"] for m in identity.mounts] == ["aws-iam-token"]


def test_token_without_a_mount_still_copies_env() -> None:
    identity = find_identity([container("app", IRSA_ENV, [SA_MOUNT])])
    assert identity.mounts == () and len(identity.env) == 5


def test_apply_identity_is_an_idempotent_in_place_merge() -> None:
    identity = find_identity([container("app", IRSA_ENV, [IRSA_MOUNT])])
    target = build_init_container(SPEC, Settings(), mount_path="/m", run_as_user=1)
    apply_identity(target, identity)
    once = json.dumps(target)
    apply_identity(target, identity)
    assert json.dumps(target) == once
    names = [e["name"] for e in target["env"]]
    assert names[:3] == [SPEC_ENV_VAR, "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"]
    assert "AWS_ROLE_ARN" in names and target["volumeMounts"][-1] == IRSA_MOUNT
    # A changed value replaces the entry where it is; nothing is reordered.
    rotated = Identity(env=({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/new"},))
    position = names.index("AWS_ROLE_ARN")
    apply_identity(target, rotated)
    assert target["env"][position] == {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/new"}
    assert [e["name"] for e in target["env"]] == names


def test_identity_copies_are_independent() -> None:
    env = [dict(e) for e in IRSA_ENV]
    identity = find_identity([container("app", env, [IRSA_MOUNT])])
    env[3]["value"] = "changed"
    assert {e["name"]: e["value"] for e in identity.env}["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/app"


def test_fetcher_runs_with_the_files_group_so_it_can_set_it() -> None:
    """Without CAP_CHOWN the fetcher can only give files a group it is in: the spec's fileGid is its runAsGroup."""
    for container in (
        build_init_container(SPEC, Settings(), mount_path="/m", run_as_user=1000),
        build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=1000, native=True),
    ):
        assert container["securityContext"]["runAsGroup"] == SPEC.file_gid == 2000
    no_group = build_spec(objects="- objectName: a\n  objectType: secretsmanager\n", region="eu-west-1")
    assert no_group.file_gid is None
    assert (
        "runAsGroup"
        not in build_init_container(no_group, Settings(), mount_path="/m", run_as_user=1000)["securityContext"]
    )
