"""Admission of provider: gcp pods: inline objects and SPCs, Workload Identity settings, the token volume, denials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from fetcher.contract import FetchSpec, spec_from_json, spec_to_json
from tests.support.pods import make_pod
from tests.support.resolving import admit_request, lookup
from webhook.policy.pipeline import Admission
from webhook.policy.request import PodRequest
from webhook.settings import Settings

Validate = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]

GKE = Settings.from_env(
    {"FERRY_GCP_PROJECT": "my-project", "FERRY_GCP_LOCATION": "us-central1", "FERRY_GCP_CLUSTER": "prod"}
)
SECRETS = """
- resourceName: projects/my-project/secrets/db/versions/latest
  path: db-password
- resourceName: projects/my-project/locations/europe-west4/secrets/api/versions/3
  path: keys/api
  mode: 0400
"""
SPC = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "app-secrets", "namespace": "team-b"},
    "spec": {"provider": "gcp", "parameters": {"secrets": SECRETS, "auth": "pod-adc"}},
}


def admit(pod: dict[str, Any], settings: Settings = GKE, namespace_obj: dict[str, Any] | None = None) -> Admission:
    return admit_request(PodRequest.read(pod, "team-b", namespace_obj), settings, spc_lookup=lookup(SPC))


def gcp_pod(**annotations: str) -> dict[str, Any]:
    return make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/provider": "gcp", "ferry.dev/objects": SECRETS, **annotations},
        containers=[{"name": "web", "image": "registry.example.com/web:1"}],
        securityContext={"runAsUser": 1000, "fsGroup": 2000},
        namespace="team-b",
    )


def spec_of(admission: Admission) -> FetchSpec:
    init = next(c for c in admission.pod["spec"]["initContainers"] if c["name"] == "ferry-init")
    return spec_from_json(next(e["value"] for e in init["env"] if e["name"] == "FERRY_SPEC"))


def test_inline_gcp_objects_get_the_pool_token_volume_and_settings() -> None:
    admission = admit(gcp_pod())
    assert admission.outcome == "injected", admission.message
    spec = spec_of(admission)
    assert spec.provider == "gcp" and spec.gcp is not None
    assert spec.gcp.workload_pool == "my-project.svc.id.goog"
    assert spec.gcp.identity_provider.endswith("/projects/my-project/locations/us-central1/clusters/prod")
    assert [obj.object_alias for obj in spec.objects] == ["db-password", "keys/api"]
    volume = next(v for v in admission.pod["spec"]["volumes"] if v["name"] == "ferry-gcp-token")
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "my-project.svc.id.goog"
    init = next(c for c in admission.pod["spec"]["initContainers"] if c["name"] == "ferry-init")
    assert {"name": "ferry-gcp-token", "mountPath": "/var/run/secrets/ferry.dev/gcp", "readOnly": True} in init[
        "volumeMounts"
    ]
    app = admission.pod["spec"]["containers"][0]
    assert all(m["name"] != "ferry-gcp-token" for m in app["volumeMounts"])


def test_a_gcp_spc_copied_from_the_provider_is_admitted() -> None:
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "app-secrets"}, namespace="team-b")
    admission = admit(pod)
    assert admission.outcome == "injected", admission.message
    assert spec_of(admission).objects[1].file_permission == 0o400


def test_the_service_account_comes_from_the_pod_then_the_namespace() -> None:
    namespace = {
        "metadata": {
            "name": "team-b",
            "annotations": {"ferry.dev/gcp-service-account": "team@my-project.iam.gserviceaccount.com"},
        }
    }
    spec = spec_of(admit(gcp_pod(), namespace_obj=namespace))
    assert spec.gcp is not None and spec.gcp.service_account == "team@my-project.iam.gserviceaccount.com"
    pod = gcp_pod(**{"ferry.dev/gcp-service-account": "web@my-project.iam.gserviceaccount.com"})
    spec = spec_of(admit(pod, namespace_obj=namespace))
    assert spec.gcp is not None and spec.gcp.service_account == "web@my-project.iam.gserviceaccount.com"


def test_namespace_annotations_override_the_pool_and_a_pod_cannot() -> None:
    provider = "https://container.googleapis.com/v1/projects/other-proj/locations/europe-west4/clusters/c2"
    namespace = {
        "metadata": {
            "name": "team-b",
            "annotations": {
                "ferry.dev/gcp-workload-pool": "other-proj.svc.id.goog",
                "ferry.dev/gcp-identity-provider": provider,
            },
        }
    }
    spec = spec_of(admit(gcp_pod(), namespace_obj=namespace))
    assert spec.gcp is not None and spec.gcp.workload_pool == "other-proj.svc.id.goog"
    pod = gcp_pod(**{"ferry.dev/gcp-workload-pool": "attacker-proj.svc.id.goog"})
    admission = admit(pod)
    spec = spec_of(admission)
    assert spec.gcp is not None and spec.gcp.workload_pool == "my-project.svc.id.goog"
    assert any("ferry.dev/gcp-workload-pool is a namespace annotation" in w for w in admission.warnings)


def test_without_workload_identity_settings_the_pod_is_denied_saying_what_to_set() -> None:
    admission = admit(gcp_pod(), settings=Settings())
    assert admission.outcome == "denied"
    message = admission.message or ""
    assert "GKE Workload Identity is not configured" in message and "FERRY_GCP_PROJECT" in message


def test_bad_entries_are_denied_naming_each_field() -> None:
    bad = """
- resourceName: projects/my-project/secrets/db/versions/latest
  path: ../../etc/passwd
  mode: 1000
- resourceName: "projects/my-project/secrets/db/versions/latest\\nprojects/x"
  path: a
- resourceName: projects/my-project/secrets/db/versions/1
  path: b
  extractJSONKey: u
  extractYAMLKey: u
  resource: typo
- resourceName: projects/my-project/secrets/db/versions/2
  path: c
- resourceName: projects/my-project/secrets/db/versions/3
  fileName: c
"""
    admission = admit(gcp_pod(**{"ferry.dev/objects": bad}))
    assert admission.outcome == "denied"
    message = admission.message or ""
    for expected in (
        "ferry.dev/objects: objects[0].path",
        "objects[0].mode",
        "objects[1].resourceName",
        "objects[2].extractYAMLKey",
        "objects[2].'resource': is not a known key; did you mean resourceName?",
        "objects[4].fileName: 'c' is already written by ferry.dev/objects: objects[3].path",
    ):
        assert expected in message, (expected, message)
    assert len(message) < 2500


def test_shared_identities_are_denied() -> None:
    spc = {**SPC, "spec": {"provider": "gcp", "parameters": {"secrets": SECRETS, "auth": "provider-adc"}}}
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "app-secrets"}, namespace="team-b")
    admission = admit_request(PodRequest.read(pod, "team-b", None), GKE, spc_lookup=lookup(spc))
    assert admission.outcome == "denied" and "shared by every pod on the node" in (admission.message or "")


def test_a_tenant_cannot_redirect_ferrys_google_endpoints() -> None:
    pod = gcp_pod()
    pod["spec"]["containers"][0]["env"] = [
        {"name": "FERRY_GCP_API_BASE", "value": "https://attacker.example"},
        {"name": "FERRY_GCP_TOKEN_FILE", "value": "/tmp/other"},
        {"name": "SSL_CERT_FILE", "value": "/tmp/ca.pem"},
    ]
    admission = admit(pod)
    assert admission.outcome == "injected"
    for container in admission.pod["spec"]["initContainers"]:
        if container["name"].startswith("ferry-"):
            names = {entry["name"] for entry in container["env"]}
            assert not names & {"FERRY_GCP_API_BASE", "FERRY_GCP_TOKEN_FILE", "SSL_CERT_FILE"}


def test_an_aws_pod_gets_no_gcp_token() -> None:
    objects = "- objectName: prod/db\n  objectType: secretsmanager\n"
    pod = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/objects": objects, "ferry.dev/region": "eu-west-1"}, namespace="team-b"
    )
    admission = admit(pod)
    assert admission.outcome == "injected", admission.message
    assert all(v["name"] != "ferry-gcp-token" for v in admission.pod["spec"]["volumes"])
    assert spec_of(admission).gcp is None


def test_the_wire_form_of_gcp_objects_is_the_providers_format() -> None:
    spec = spec_of(admit(gcp_pod()))
    import json

    wire = json.loads(spec_to_json(spec))
    assert wire["objects"] == yaml.safe_load(SECRETS.replace("mode: 0400", "mode: 256"))


def test_hostile_names_are_denied_with_a_bounded_message() -> None:
    hostile = [
        "projects/my-project/locations/evil.example.com#/secrets/s/versions/1",  # a location that would pick the host
        "projects/my-project/locations/us-central1/secrets/s/versions/1/../../../other",
        "https://secretmanager.googleapis.com/v1/projects/my-project/secrets/s/versions/1",
        "projects/my-project/secrets/s/versions/1:access",
        "projects/my-project/locations/global/secrets/s/versions/1",  # a global secret named as regional
        "projects/" + "a" * 100_000 + "/secrets/s/versions/1",
    ]
    entries = [{"resourceName": name, "path": f"f{i}"} for i, name in enumerate(hostile)]
    entries += [{"resourceName": "projects/my-project/secrets/s/versions/x" * 3, "path": f"g{i}"} for i in range(300)]
    admission = admit(gcp_pod(**{"ferry.dev/objects": yaml.safe_dump(entries)[:60_000]}))
    assert admission.outcome == "denied"
    message = admission.message or ""
    for index in range(len(hostile)):
        assert f"objects[{index}].resourceName" in message or "limit is 200" in message, index
    assert len(message) < 4096


def test_each_hostile_name_alone_does_not_parse() -> None:
    from fetcher.contract.gcp import parse_resource_name

    for name in (
        "projects/my-project/locations/evil.example.com#/secrets/s/versions/1",
        "projects/my-project/locations/us-central1/secrets/s/versions/1/../../../other",
        "projects/my-project/secrets/s/versions/1:access",
        "projects/my-project/locations/global/secrets/s/versions/1",
        "projects/my-project/secrets/s/versions/01",
        "projects/my-project/secrets/s/versions/latest\n",
        "projects/my-project/secrets/s/versions/",
    ):
        assert parse_resource_name(name) is None, name
    assert parse_resource_name("projects/my-project/locations/global/parameters/p/versions/v1") is not None
    assert parse_resource_name("projects/123456789012/secrets/s_1-x/versions/my-alias") is not None


def test_gke_settings_are_checked_at_start_up() -> None:
    import pytest

    from webhook.settings import SettingsError

    for bad in (
        {"FERRY_GCP_PROJECT": "My_Project", "FERRY_GCP_LOCATION": "us-central1", "FERRY_GCP_CLUSTER": "prod"},
        {"FERRY_GCP_PROJECT": "my-project"},  # without location and cluster
        {"FERRY_GCP_WORKLOAD_POOL": "my-project.svc.id.goog"},  # without its provider
    ):
        with pytest.raises(SettingsError, match="FERRY_GCP"):
            Settings.from_env(bad)


def test_aws_objects_under_provider_gcp_say_which_format_is_expected() -> None:
    pod = gcp_pod(**{"ferry.dev/objects": "- objectName: prod/db\n  objectType: secretsmanager\n"})
    message = admit(pod).message or ""
    assert "objects[0].'objectName': is not a known key; it is an AWS key" in message
    assert "objects[0].resourceName: is missing" in message


def test_an_app_container_cannot_mount_ferrys_gcp_token() -> None:
    """The pod does not declare ferry-gcp-token, so a mount of it dangles until Ferry adds the volume:
    then the app (or a container ferry.dev/containers leaves out) would read the workload-pool token."""
    for group in ("containers", "initContainers"):
        pod = gcp_pod()
        thief = {
            "name": "thief",
            "image": "registry.example.com/x:1",
            "volumeMounts": [{"name": "ferry-gcp-token", "mountPath": "/stolen"}],
        }
        pod["spec"].setdefault(group, []).append(thief)
        admission = admit(pod)
        assert admission.outcome == "denied", (group, admission.outcome)
        assert "'ferry-gcp-token', which is Ferry's" in (admission.message or "")
        assert "thief" in (admission.message or "")


def test_no_container_may_mount_any_of_ferrys_token_volumes() -> None:
    from webhook.policy.podshape import check_own_volume_mounts
    from webhook.policy.volumes import GCP_TOKEN_VOLUME_NAME, KUBE_API_VOLUME_NAME

    for volume in (KUBE_API_VOLUME_NAME, GCP_TOKEN_VOLUME_NAME):
        problems: list[str] = []
        spec = {"containers": [{"name": "app", "volumeMounts": [{"name": volume, "mountPath": "/t"}]}]}
        check_own_volume_mounts(spec, problems)
        assert len(problems) == 1 and f"{volume!r}, which is Ferry's" in problems[0], problems
