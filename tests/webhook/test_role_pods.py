"""What the injected containers carry for issue 18: the pod's identity for AssumeRole, the start-up deadline."""

from __future__ import annotations

from typing import Any

from fetcher.contract import build_spec
from webhook.policy.containers import build_init_container, build_sidecar
from webhook.settings import Settings

ROLE = "arn:aws:iam::222233334444:role/shop-reader"


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_a_role_pod_gets_its_namespace_service_account_and_name_from_the_downward_api() -> None:
    spec = build_spec(
        objects=[{"objectName": "db", "objectType": "secretsmanager", "roleArn": ROLE}], region="us-east-1"
    )
    for container in (
        build_init_container(spec, Settings(), mount_path="/m", run_as_user=1),
        build_sidecar(spec, Settings(), mount_path="/m", run_as_user=1, native=True),
    ):
        found = env(container)
        assert found["FERRY_POD_SERVICE_ACCOUNT"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.serviceAccountName"}
        }
        assert found["FERRY_POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert found["FERRY_POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert [item["name"] for item in container["env"]].count("FERRY_POD_NAME") == 1


def test_a_pod_without_roles_gets_no_identity_variables_and_the_deadline_only_when_set() -> None:
    spec = build_spec(objects=[{"objectName": "db", "objectType": "secretsmanager"}], region="us-east-1")
    plain = env(build_init_container(spec, Settings(), mount_path="/m", run_as_user=1))
    assert "FERRY_POD_SERVICE_ACCOUNT" not in plain and "FERRY_STARTUP_DEADLINE" not in plain
    tuned = Settings.from_env({"FERRY_STARTUP_DEADLINE": "3m"})
    assert env(build_init_container(spec, tuned, mount_path="/m", run_as_user=1))["FERRY_STARTUP_DEADLINE"] == "180"
    assert "FERRY_STARTUP_DEADLINE" not in env(build_sidecar(spec, tuned, mount_path="/m", run_as_user=1, native=True))
