"""SecretProviderClass parity at admission: secretObjects, output formats, ignored fields, the CSI volume, `inject`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fetcher.contract import spec_from_json
from fetcher.contract.secret_objects import POD_NAME_ENV_VAR, POD_NAMESPACE_ENV_VAR, POD_UID_ENV_VAR
from tests.support.pods import make_pod
from tests.support.resolving import denied, inject_resolved, lookup, resolve_pod, resolved
from tests.webhook.test_main import run_inject
from webhook.policy.specbuild import ResolvedRequest
from webhook.policy.view import secret_provider_classes_in
from webhook.policy.volumes import KUBE_API_VOLUME_NAME, SERVICE_ACCOUNT_MOUNT_PATH
from webhook.settings import Settings

K8S_VERSION = kubernetes_validate.latest_version()
OBJECTS = "- objectName: prod/db\n  objectType: secretsmanager\n  objectAlias: db-password\n"
SECRET_OBJECTS = [{"secretName": "db", "type": "Opaque", "data": [{"objectName": "db-password", "key": "password"}]}]


def spc(secret_objects: Any = None, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"provider": "aws", "parameters": {"objects": OBJECTS, "region": "us-east-1", **params}}
    if secret_objects is not None:
        body["secretObjects"] = secret_objects
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "db", "namespace": "team-b"},
        "spec": body,
    }


def injected(pod: dict[str, Any], request: ResolvedRequest, settings: Settings) -> dict[str, Any]:
    new = dict(inject_resolved(pod, request, settings))
    kubernetes_validate.validate(new, K8S_VERSION, strict=True)
    return new


def own(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod["spec"]["initContainers"] if c["name"].startswith("ferry-")]


def test_an_spc_with_secret_objects_gives_ferry_alone_the_token_and_the_owner_env(settings: Settings) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db", "ferry.dev/refresh-interval": "1m"}, namespace="team-b")
    request = resolved(resolve_pod(pod, None, lookup(spc(SECRET_OBJECTS)), settings))
    assert [obj.secret_name for obj in request.spec.secret_objects] == ["db"]
    new = injected(pod, request, settings)
    volumes = {v["name"]: v for v in new["spec"]["volumes"]}
    sources = volumes[KUBE_API_VOLUME_NAME]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert len(own(new)) == 2  # init and native sidecar
    for container in own(new):
        fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
        assert fields == {
            POD_NAME_ENV_VAR: "metadata.name",
            POD_UID_ENV_VAR: "metadata.uid",
            POD_NAMESPACE_ENV_VAR: "metadata.namespace",
        }
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts[KUBE_API_VOLUME_NAME] == {
            "name": KUBE_API_VOLUME_NAME,
            "mountPath": SERVICE_ACCOUNT_MOUNT_PATH,
            "readOnly": True,
        }
    app = new["spec"]["containers"][0]
    assert KUBE_API_VOLUME_NAME not in {m["name"] for m in app.get("volumeMounts", [])}
    # The spec the fetcher gets carries the entries, and the webhook put no value anywhere (it has none).
    wire = json.loads(next(e["value"] for e in own(new)[0]["env"] if e["name"] == "FERRY_SPEC"))
    assert wire["secretObjects"] == SECRET_OBJECTS
    assert spec_from_json(json.dumps(wire)) == request.spec


def test_without_secret_objects_ferry_gets_no_token_volume_and_no_owner_env(settings: Settings) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    new = injected(pod, resolved(resolve_pod(pod, None, lookup(spc()), settings)), settings)
    assert KUBE_API_VOLUME_NAME not in {v["name"] for v in new["spec"]["volumes"]}
    for container in own(new):
        assert not [e for e in container["env"] if "valueFrom" in e]
        assert KUBE_API_VOLUME_NAME not in {m["name"] for m in container["volumeMounts"]}


def test_inline_secret_objects_through_the_annotation(settings: Settings) -> None:
    pod = make_pod(
        {
            "ferry.dev/objects": OBJECTS,
            "ferry.dev/region": "us-east-1",
            "ferry.dev/secret-objects": yaml.safe_dump(SECRET_OBJECTS),
        },
        namespace="team-b",
    )
    request = resolved(resolve_pod(pod, None, lookup(), settings))
    assert request.spec.secret_objects[0].data[0].key == "password"


@pytest.mark.parametrize(
    ("secret_objects", "expected"),
    [
        (
            [{"secretName": "db", "type": "Secret", "data": [{"objectName": "db-password", "key": "p"}]}],
            "secretObjects[0].type: 'Secret' is not supported",
        ),
        (
            [{"secretName": "db", "type": "Opaque", "data": [{"objectName": "prod/db", "key": "p"}]}],
            "secretObjects[0].data[0].objectName: no file is named 'prod/db'",
        ),
        ("not a list", "secretObjects: must be a YAML list of secretObjects entries"),
    ],
)
def test_bad_secret_objects_are_denied_at_admission_naming_the_field(
    settings: Settings, secret_objects: Any, expected: str
) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc(secret_objects)), settings))
    assert "SecretProviderClass team-b/db: spec." in denial.message
    assert expected in denial.message
    assert len(denial.message) < 1000


def test_a_huge_bad_secret_objects_list_gives_a_bounded_denial(settings: Settings) -> None:
    entries = [{"secretName": f"s{i}", "type": "Nope" * 100, "data": []} for i in range(60)]
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc(entries)), settings))
    assert "and 110 more problems" in denial.message
    assert len(denial.message) < 4000


def test_secret_objects_annotation_with_an_spc_is_denied(settings: Settings) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db", "ferry.dev/secret-objects": "[]"}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc()), settings))
    assert "spec.secretObjects" in denial.message and "remove ferry.dev/secret-objects" in denial.message


def test_output_formats_pod_over_spc_over_namespace(settings: Settings) -> None:
    ns = {"metadata": {"name": "team-b", "annotations": {"ferry.dev/output-formats": "json"}}}
    plain = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    assert resolved(resolve_pod(plain, ns, lookup(spc()), settings)).spec.output_formats == (("json", "secrets.json"),)
    from_class = resolved(resolve_pod(plain, ns, lookup(spc(outputFormats="dotenv")), settings))
    assert from_class.spec.output_formats == (("dotenv", "secrets.env"),)
    pod = make_pod(
        {"ferry.dev/secret-provider-class": "db", "ferry.dev/output-formats": "dotenv=app.env,json"}, namespace="team-b"
    )
    both = resolved(resolve_pod(pod, ns, lookup(spc(outputFormats="dotenv")), settings))
    assert both.spec.output_formats == (("dotenv", "app.env"), ("json", "secrets.json"))


def test_a_bad_output_format_is_denied_naming_where_it_came_from(settings: Settings) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db", "ferry.dev/output-formats": "yaml"}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc()), settings))
    assert "ferry.dev/output-formats: 'yaml' is not an output format; use dotenv or json" in denial.message
    clash = make_pod(
        {"ferry.dev/secret-provider-class": "db", "ferry.dev/output-formats": "json=db-password"}, namespace="team-b"
    )
    denial = denied(resolve_pod(clash, None, lookup(spc()), settings))
    assert "a file of the objects" in denial.message


def test_fields_ferry_ignores_are_warned_about_by_name(settings: Settings) -> None:
    manifest = spc(usePodIdentity="true", preferredAddressType="ipv6", podIdentityHint="x", pathTranslation="_")
    manifest["spec"]["extraThing"] = {"a": 1}
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    warnings = resolved(resolve_pod(pod, None, lookup(manifest), settings)).warnings
    text = "\n".join(warnings)
    assert "spec.parameters.usePodIdentity is ignored: Ferry uses whichever AWS identity the pod has" in text
    assert "spec.parameters.preferredAddressType is ignored" in text
    assert "'podIdentityHint' is not known to Ferry and ignored" in text
    assert "spec 'extraThing' is not known to Ferry" in text
    assert all(w.startswith("SecretProviderClass team-b/db: ") for w in warnings)
    clean = resolved(resolve_pod(pod, None, lookup(spc()), settings))
    assert clean.warnings == ()


def test_the_old_csi_volume_at_the_mount_path_says_to_remove_it(settings: Settings) -> None:
    csi = {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True}}
    mount = {"name": "secrets", "mountPath": "/mnt/secrets-store"}
    containers = [{"name": "app", "image": "x", "volumeMounts": [mount]}]
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, containers=containers, volumes=[csi], namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc()), settings))
    assert "remove that volume from spec.volumes and its volumeMounts" in denial.message
    assert "choose another path" not in denial.message
    elsewhere = [{"name": "app", "image": "x", "volumeMounts": [{"name": "secrets", "mountPath": "/csi"}]}]
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, containers=elsewhere, volumes=[csi], namespace="team-b")
    warnings = resolved(resolve_pod(pod, None, lookup(spc()), settings)).warnings
    assert any("'secrets' still uses the Secrets Store CSI driver; remove the CSI volume" in w for w in warnings)


def test_inject_reads_secret_provider_classes_from_the_same_stream() -> None:
    workload = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "team-b"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {
                    "labels": {"app": "api"},
                    "annotations": {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"},
                },
                "spec": {"containers": [{"name": "api", "image": "registry.example.com/api:1"}]},
            },
        },
    }
    stream = yaml.safe_dump_all([spc(SECRET_OBJECTS, usePodIdentity="true"), workload])
    result = run_inject("-f", "-", stdin=stream)
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["SecretProviderClass", "Deployment"]
    template = documents[1]["spec"]["template"]
    assert template["spec"]["initContainers"][0]["name"] == "ferry-init"
    assert KUBE_API_VOLUME_NAME in {v["name"] for v in template["spec"]["volumes"]}
    assert "usePodIdentity is ignored" in result.stderr
    missing = run_inject("-f", "-", stdin=yaml.safe_dump(workload))
    assert missing.returncode == 1 and "SecretProviderClass 'db' was not found" in missing.stderr


def test_classes_are_found_at_the_top_level_and_in_lists_only_when_named() -> None:
    named = spc()
    unnamed = {**spc(), "metadata": {}}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"}}
    wrong_group = {**spc(), "apiVersion": "example.com/v1"}
    documents = [None, other, named, {"apiVersion": "v1", "kind": "List", "items": [named, unnamed, wrong_group]}]
    assert secret_provider_classes_in(documents) == [named, named]
