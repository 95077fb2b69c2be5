"""secretObjects without a cluster: the entries' checks, the API server's per-type rules, manifests and the Role."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from kubernetes_validate import validate

from fetcher.kube import APPLY_VERBS
from fetcher.secret_sync import (
    FERRY_LABEL,
    MANAGED_LABEL,
    POD_NAME_ENV_VAR,
    POD_NAMESPACE_ENV_VAR,
    POD_UID_ENV_VAR,
    SECRET_SYNC_VERBS,
    SECRET_TYPES,
    PodOwner,
    SecretObjectsError,
    SecretSyncError,
    build_secret_manifests,
    owner_manifest,
    parse_secret_objects,
    pod_owner_from_env,
    secret_data,
    secret_sync_rbac,
    secret_sync_rbac_yaml,
    secret_sync_role_name,
    sync_secrets,
)

OWNER = PodOwner(name="web-1", uid="8c1c2f0e-0000-4000-8000-000000000001", namespace="shop")
CERT = b"-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
CHAIN = b"-----BEGIN CERTIFICATE-----\nMIIBchain\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEkey-value-secret\n-----END PRIVATE KEY-----\n"
KUBERNETES_VERSION = "1.30.0"


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"secretName": "db", "type": "Opaque", "data": [{"objectName": "pw", "key": "password"}]}
    base.update(fields)
    return base


def problems_of(raw: Any) -> str:
    with pytest.raises(SecretObjectsError) as caught:
        parse_secret_objects(raw)
    return str(caught.value)


def data_problems(secret_type: str, data: list[dict[str, str]], files: dict[str, bytes], **fields: Any) -> str:
    (obj,) = parse_secret_objects([entry(type=secret_type, data=data, **fields)])
    with pytest.raises(SecretObjectsError) as caught:
        secret_data(obj, files, "secretObjects[0]")
    return str(caught.value)


def test_a_valid_entry_becomes_a_valid_secret_manifest_with_the_managed_label_and_owner() -> None:
    objects = parse_secret_objects([entry(labels={"app": "shop"}, annotations={"example.com/team": "payments"})])

    (manifest,) = build_secret_manifests(objects, {"pw": b"hunter2"}, OWNER)

    validate(manifest, KUBERNETES_VERSION, strict=True)
    assert manifest["metadata"]["labels"] == {"app": "shop", MANAGED_LABEL: "true", FERRY_LABEL: "ferry"}
    assert manifest["metadata"]["annotations"] == {"example.com/team": "payments"}
    assert manifest["metadata"]["namespace"] == "shop"
    assert manifest["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": OWNER.uid}
    ]
    assert base64.b64decode(manifest["data"]["password"]) == b"hunter2"
    validate(owner_manifest("db", OWNER), KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"secretName": "db"}, "secretObjects: must be a list"),
        ([entry(secretName="")], "secretObjects[0].secretName: required"),
        ([entry(secretName="Bad_Name")], "secretObjects[0].secretName: 'Bad_Name' is not a valid Secret name"),
        ([entry(type="")], "secretObjects[0].type: required; use Opaque"),
        ([entry(type="kubernetes.io/magic")], "secretObjects[0].type: 'kubernetes.io/magic' is not supported"),
        ([entry(data=[])], "secretObjects[0].data: required, a non-empty list"),
        ([entry(data=[{"objectName": "pw"}])], "secretObjects[0].data[0].key: required"),
        ([entry(data=[{"key": "k"}])], "secretObjects[0].data[0].objectName: required"),
        ([entry(data=[{"objectName": "pw", "key": "a/b"}])], "secretObjects[0].data[0].key: 'a/b' is not a valid"),
        ([entry(data=[{"objectName": "pw", "key": ".."}])], "secretObjects[0].data[0].key: '..' is not a valid"),
        (
            [entry(data=[{"objectName": "a", "key": "k"}, {"objectName": "b", "key": "k"}])],
            "secretObjects[0].data[1].key: 'k' is already set by secretObjects[0].data[0]",
        ),
        ([entry(), entry()], "secretObjects[1].secretName: 'db' is already used by secretObjects[0]"),
        ([entry(labels={"app": 3})], "secretObjects[0].labels: must be a mapping of strings"),
        ([entry(labels={"app": "no spaces"})], "secretObjects[0].labels['app']: the value is not a valid label"),
        ([entry(labels={MANAGED_LABEL: "false"})], f'{MANAGED_LABEL} is set to "true" by Ferry'),
        ([entry(annotations={"bad key": "x"})], "secretObjects[0].annotations: 'bad key' is not a valid key"),
        ([entry(secretname="db")], "secretObjects[0]: unknown field(s) 'secretname'"),
        (
            [entry(type="kubernetes.io/service-account-token")],
            "kubernetes.io/service-account-token is refused",
        ),
    ],
)
def test_each_bad_entry_is_refused_naming_the_field(raw: Any, expected: str) -> None:
    assert expected in problems_of(raw)


def test_every_problem_is_reported_at_once_and_the_message_stays_bounded() -> None:
    raw = [entry(secretName=f"BAD{index}", type="nope") for index in range(60)]
    message = problems_of(raw)
    assert "secretObjects[0].secretName" in message and "secretObjects[0].type" in message
    assert "and 110 more" in message and len(message) < 3000


def test_too_many_entries_are_refused_before_any_work() -> None:
    assert "at most 64 entries, got 65" in problems_of([entry(secretName=f"s{index}") for index in range(65)])


def test_an_objectname_without_a_file_lists_the_files_there_are() -> None:
    message = data_problems("Opaque", [{"objectName": "db_password", "key": "password"}], {"db-password": b"x"})
    assert "secretObjects[0].data[0].objectName: no file named 'db_password'" in message
    assert "one of 'db-password'" in message and "after objectAlias and path translation" in message


@pytest.mark.parametrize(
    ("secret_type", "data", "files", "expected"),
    [
        ("kubernetes.io/basic-auth", [{"objectName": "f", "key": "token"}], {"f": b"x"}, "'username' or 'password'"),
        ("kubernetes.io/tls", [{"objectName": "f", "key": "tls.crt"}], {"f": CERT}, "needs the key 'tls.key'"),
        ("kubernetes.io/tls", [{"objectName": "f", "key": "tls.key"}], {"f": CERT}, "holds no PEM PRIVATE KEY block"),
        ("kubernetes.io/ssh-auth", [{"objectName": "f", "key": "ssh-privatekey"}], {"f": b""}, "must not be empty"),
        ("kubernetes.io/ssh-auth", [{"objectName": "f", "key": "id"}], {"f": b"k"}, "needs the key 'ssh-privatekey'"),
        (
            "kubernetes.io/dockerconfigjson",
            [{"objectName": "f", "key": ".dockerconfigjson"}],
            {"f": b"{not json secret-value"},
            "must hold a JSON object",
        ),
        (  # nested deeper than the JSON decoder goes: RecursionError escaped before
            "kubernetes.io/dockerconfigjson",
            [{"objectName": "f", "key": ".dockerconfigjson"}],
            {"f": b"[" * 65_000},
            "must hold a JSON object",
        ),
        ("kubernetes.io/dockercfg", [{"objectName": "f", "key": "cfg"}], {"f": b"{}"}, "needs the key '.dockercfg'"),
    ],
)
def test_the_api_servers_rules_for_each_type_are_checked_first(
    secret_type: str, data: list[dict[str, str]], files: dict[str, bytes], expected: str
) -> None:
    message = data_problems(secret_type, data, files)
    assert expected in message
    assert "secret-value" not in message and "MIIB" not in message


def test_a_tls_secret_splits_one_pem_file_into_certificate_chain_and_key() -> None:
    (obj,) = parse_secret_objects(
        [
            entry(
                type="kubernetes.io/tls",
                data=[{"objectName": "bundle.pem", "key": "tls.crt"}, {"objectName": "bundle.pem", "key": "tls.key"}],
            )
        ]
    )
    data = secret_data(obj, {"bundle.pem": KEY + CERT + CHAIN})
    assert data["tls.key"] == KEY
    assert data["tls.crt"] == CERT + CHAIN


@pytest.mark.parametrize("secret_type", SECRET_TYPES)
def test_every_supported_type_builds_a_manifest_the_schema_accepts(secret_type: str) -> None:
    keys = {
        "kubernetes.io/basic-auth": {"username": b"u", "password": b"p"},
        "kubernetes.io/tls": {"tls.crt": CERT, "tls.key": KEY},
        "kubernetes.io/ssh-auth": {"ssh-privatekey": KEY},
        "kubernetes.io/dockerconfigjson": {".dockerconfigjson": json.dumps({"auths": {}}).encode()},
        "kubernetes.io/dockercfg": {".dockercfg": b"{}"},
    }.get(secret_type, {"anything": b"v"})
    files = {f"file-{key.strip('.')}": value for key, value in keys.items()}
    raw = entry(
        type=secret_type,
        data=[{"objectName": f"file-{key.strip('.')}", "key": key} for key in keys],
    )

    (manifest,) = build_secret_manifests(parse_secret_objects([raw]), files, OWNER)

    validate(manifest, KUBERNETES_VERSION, strict=True)
    assert manifest["type"] == secret_type
    assert {key: base64.b64decode(value) for key, value in manifest["data"].items()} == keys


def test_a_secret_over_one_mebibyte_is_refused_before_the_api_server_sees_it() -> None:
    message = data_problems("Opaque", [{"objectName": "big", "key": "big"}], {"big": b"x" * (1024 * 1024 + 1)})
    assert "1048577 bytes; Kubernetes allows at most 1048576" in message


def test_the_owner_comes_from_the_downward_api_env_vars() -> None:
    env = {POD_NAME_ENV_VAR: "web-1", POD_UID_ENV_VAR: OWNER.uid, POD_NAMESPACE_ENV_VAR: "shop"}
    assert pod_owner_from_env(env) == OWNER
    with pytest.raises(SecretObjectsError, match=f"{POD_UID_ENV_VAR} not set"):
        pod_owner_from_env({POD_NAME_ENV_VAR: "web-1", POD_NAMESPACE_ENV_VAR: "shop"})


def test_the_role_grants_exactly_the_sync_verbs_on_the_named_secrets() -> None:
    objects = parse_secret_objects([entry(secretName="db"), entry(secretName="api-key")])

    printed = secret_sync_rbac_yaml("shop", "web", objects, spc_name="orders")
    role, binding = yaml.safe_load_all(printed)

    for document in (role, binding):
        validate(document, KUBERNETES_VERSION, strict=True)
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["api-key", "db"],
            "verbs": ["get", "create", "patch"],
        }
    ]
    assert role["metadata"]["name"] == binding["roleRef"]["name"] == "ferry-secret-sync:orders:web"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]
    assert SECRET_SYNC_VERBS == ("get", *APPLY_VERBS)
    assert secret_sync_rbac("shop", "web", []) == []
    # Said plainly, before anything is applied:
    assert printed.startswith("#") and "create on Secrets is powerful" in printed
    assert "kubernetes.io/service-account-token" in printed and "automountServiceAccountToken: false" in printed


@pytest.mark.parametrize(
    ("first", "second"),
    [(("orders", "web"), ("orders", "api")), (("orders", "web"), ("billing", "web")), (("a-b", "c"), ("a", "b-c"))],
)
def test_role_names_differ_per_class_and_service_account(first: tuple[str, str], second: tuple[str, str]) -> None:
    assert secret_sync_role_name(*first) != secret_sync_role_name(*second)


def test_a_role_name_from_long_names_is_bounded_and_still_distinct() -> None:
    long_class, long_account = "c" * 253, "s" * 253
    names = {secret_sync_role_name(long_class, long_account), secret_sync_role_name(long_class, long_account + "x")}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 253
        role = secret_sync_rbac("shop", "web", ["db"])[0]
        role["metadata"]["name"] = name
        validate(role, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("secret_type", ["kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"])
def test_token_types_are_refused_at_admission_naming_the_field(secret_type: str) -> None:
    from fetcher.contract import SpecError, build_spec

    with pytest.raises(SpecError) as caught:
        build_spec(
            objects=[{"objectName": "pw", "objectType": "secretsmanager"}],
            region="us-east-1",
            secret_objects=[entry(type=secret_type, annotations={"kubernetes.io/service-account.name": "ci"})],
        )
    assert f"secretObjects[0].type: {secret_type} is refused" in str(caught.value)


def test_ferrys_own_label_is_reserved() -> None:
    assert "Ferry's mark" in problems_of([entry(labels={FERRY_LABEL: "someone"})])


class _NoCalls:
    def get_metadata(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no request may be made for a token type")

    apply = get_metadata


@pytest.mark.parametrize("secret_type", ["kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"])
def test_the_fetcher_refuses_token_types_before_any_request(secret_type: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "type": secret_type, "data": {}}
    with pytest.raises(SecretSyncError, match="is refused"):
        sync_secrets(_NoCalls(), [manifest], OWNER)


@pytest.mark.parametrize(("text", "seconds"), [(None, 300.0), ("", 300.0), ("1", 1.0), ("0", 0.0), (" 90 ", 90.0)])
def test_the_resync_interval_comes_from_the_environment(text: str | None, seconds: float) -> None:
    from fetcher.secret_sync import RESYNC_ENV_VAR, resync_seconds_from_env

    assert resync_seconds_from_env({} if text is None else {RESYNC_ENV_VAR: text}) == seconds


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon", "1e400"])
def test_a_bad_resync_interval_is_refused_naming_the_variable(text: str) -> None:
    from fetcher.secret_sync import RESYNC_ENV_VAR, resync_seconds_from_env

    with pytest.raises(SecretObjectsError, match=RESYNC_ENV_VAR):
        resync_seconds_from_env({RESYNC_ENV_VAR: text})
