"""SecretProviderClass parity in the spec model and the fetcher: duplicates, secretObjects, formats, the Role CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fetcher.__main__ import main, secret_sync_hook
from fetcher.aws import AwsClients
from fetcher.contract import (
    SpecError,
    build_spec,
    file_names,
    needs_kube_api,
    secret_provider_class_warnings,
    spec_from_json,
    spec_from_secret_provider_class,
    spec_to_json,
)
from fetcher.contract.formats import parse_output_formats
from fetcher.errors import ConfigError, FerryError, OutputFormatError
from fetcher.loop import RefreshState, deliver, refresh_once
from fetcher.render import RenderedFiles
from tests.support.aws import PRIMARY, Seeder, make_spec

REPO = Path(__file__).resolve().parents[2]
SECRET_OBJECTS = [
    {
        "secretName": "db",
        "type": "kubernetes.io/basic-auth",
        "labels": {"app": "shop"},
        "data": [{"objectName": "current", "key": "password"}, {"objectName": "previous", "key": "username"}],
    }
]


def sm(name: str, **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", **fields}


def rotation_pair() -> list[dict[str, Any]]:
    """ASCP's usual rotation pattern: one secret, two versions, two aliases."""
    return [
        sm("db", objectVersionLabel="AWSCURRENT", objectAlias="current"),
        sm("db", objectVersionLabel="AWSPREVIOUS", objectAlias="previous"),
    ]


def spc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"provider": "aws", **spec},
    }


# --- the spec model -------------------------------------------------------------


def test_one_object_listed_twice_with_distinct_aliases_is_accepted_as_ascp_does() -> None:
    spec = make_spec(rotation_pair())
    assert [out.name for out in spec.output_files()] == ["current", "previous"]
    assert [obj.object_version_label for obj in spec.objects] == ["AWSCURRENT", "AWSPREVIOUS"]


def test_the_same_file_name_twice_is_still_denied_even_after_translation() -> None:
    with pytest.raises(SpecError) as same:
        make_spec([sm("db", objectVersionLabel="AWSCURRENT"), sm("db", objectVersionLabel="AWSPREVIOUS")])
    assert "objects[1].objectName: gives the file name 'db', which objects[0].objectName already gives" in str(
        same.value
    )
    with pytest.raises(SpecError) as translated:
        make_spec([sm("a/b"), sm("x", objectAlias="a_b")])
    assert "after path translation" in str(translated.value)


def test_secret_objects_are_checked_against_the_files_the_spec_writes() -> None:
    spec = make_spec(rotation_pair(), secret_objects=SECRET_OBJECTS, output_formats="json")
    assert needs_kube_api(spec)
    assert file_names(spec) == ("current", "previous", "secrets.json")
    assert not needs_kube_api(make_spec(rotation_pair()))
    wrong = [{**SECRET_OBJECTS[0], "data": [{"objectName": "db", "key": "password"}]}]
    with pytest.raises(SpecError) as raised:
        make_spec(rotation_pair(), secret_objects=wrong)
    message = str(raised.value)
    assert "secretObjects[0].data[0].objectName: no file is named 'db'" in message
    assert "one of 'current', 'previous'" in message


def test_the_json_document_may_feed_a_secret_key() -> None:
    synced = [{"secretName": "all", "type": "Opaque", "data": [{"objectName": "secrets.json", "key": "all.json"}]}]
    spec = make_spec(rotation_pair(), secret_objects=synced, output_formats="json")
    assert spec.secret_objects[0].data[0].object_name == "secrets.json"


def test_secret_objects_and_formats_survive_the_wire_both_ways() -> None:
    spec = make_spec(rotation_pair(), secret_objects=SECRET_OBJECTS, output_formats="dotenv=app.env,json")
    wire = json.loads(spec_to_json(spec))
    assert wire["secretObjects"] == SECRET_OBJECTS
    assert wire["outputFormats"] == {"dotenv": "app.env", "json": "secrets.json"}
    assert spec_from_json(spec_to_json(spec)) == spec
    wire["secretObjects"][0]["type"] = "Bogus"
    with pytest.raises(SpecError) as raised:
        spec_from_json(json.dumps(wire))
    assert "FERRY_SPEC.secretObjects[0].type: 'Bogus' is not supported" in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("dotenv", (("dotenv", "secrets.env"),)),
        (" JSON , dotenv=app.env ", (("dotenv", "app.env"), ("json", "secrets.json"))),
        ({"json": "all.json"}, (("json", "all.json"),)),
        ("", ()),
    ],
)
def test_output_formats_parse(raw: Any, expected: tuple[tuple[str, str], ...]) -> None:
    assert parse_output_formats(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yaml", "'yaml' is not an output format; use dotenv or json"),
        ("json,json", "json is listed twice"),
        ("json=a/b", "write a plain file name"),
        ("dotenv=x,json=x", "different files"),
        ("dotenv=" + "x" * 2000, "longer than 1024 characters"),
    ],
)
def test_bad_output_formats_are_denied_naming_the_field(raw: str, expected: str) -> None:
    with pytest.raises(SpecError) as raised:
        make_spec([sm("db")], output_formats=raw, field_names={"outputFormats": "ferry.dev/output-formats"})
    assert f"ferry.dev/output-formats: {expected}" in str(raised.value) or expected in str(raised.value)
    assert len(str(raised.value)) < 400


def test_dotenv_key_clashes_are_found_before_anything_is_fetched() -> None:
    with pytest.raises(SpecError) as raised:
        make_spec([sm("db-password"), sm("db_password")], output_formats="dotenv")
    assert "both give the variable DB_PASSWORD" in str(raised.value)
    with pytest.raises(SpecError) as clash:
        make_spec([sm("secrets.json")], output_formats="json")
    assert "a file of the objects" in str(clash.value)


def test_an_spc_gives_secret_objects_and_output_formats() -> None:
    objects = yaml.safe_dump(rotation_pair())
    manifest = spc(parameters={"objects": objects, "region": PRIMARY, "outputFormats": "dotenv"})
    manifest["spec"]["secretObjects"] = SECRET_OBJECTS
    spec = spec_from_secret_provider_class(manifest)
    assert spec.secret_objects[0].type == "kubernetes.io/basic-auth"
    assert spec.output_formats == (("dotenv", "secrets.env"),)
    manifest["spec"]["secretObjects"] = [{"secretName": "Bad_Name", "type": "Opaque", "data": []}]
    with pytest.raises(SpecError) as raised:
        spec_from_secret_provider_class(manifest)
    assert "spec.secretObjects[0].secretName: 'Bad_Name' is not a valid Secret name" in str(raised.value)


def test_what_ferry_ignores_in_a_class_is_named_in_a_warning() -> None:
    manifest = spc(
        parameters={"objects": "[]", "usePodIdentity": "true", "preferredAddressType": "ipv4", "mystery": "1"},
        secretObjects=[],
        unknownField=True,
    )
    warnings = secret_provider_class_warnings(manifest, "SecretProviderClass shop/db: ")
    assert len(warnings) == 4
    assert "spec.parameters.usePodIdentity is ignored" in warnings[0]
    assert "spec.parameters.preferredAddressType is ignored" in warnings[1]
    assert "'mystery'" in warnings[2] and "Ferry reads objects, region" in warnings[2]
    assert "'unknownField'" in warnings[3]
    many = spc(parameters={f"p{i}": "x" for i in range(500)})
    (warning,) = secret_provider_class_warnings(many)
    assert "and 492 more" in warning and len(warning) < 400


# --- the fetcher ------------------------------------------------------------------


def test_documents_land_in_the_same_swap_with_the_strictest_mode(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.secret("api-key", "a'b$HOME\n")
    seed.secret("token", "t")
    spec = make_spec(
        [sm("api-key", filePermission="0640"), sm("token", filePermission="0604")], output_formats="dotenv,json"
    )
    delivery = deliver(spec, clients, target)
    assert set(delivery.files) == {"api-key", "token", "secrets.env", "secrets.json"}
    assert json.loads((target / "secrets.json").read_text()) == {"api-key": "a'b$HOME\n", "token": "t"}
    assert (target / "secrets.env").read_text() == "API_KEY='a'\\''b$HOME\n'\nTOKEN='t'\n"
    assert os.stat(target / "secrets.env").st_mode & 0o777 == 0o600
    sourced = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; printf %s "$API_KEY"', "sh", str(target / "secrets.env")],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert sourced.stdout == b"a'b$HOME\n"


def test_a_binary_value_is_refused_for_a_document_and_nothing_is_written(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.secret("blob", b"\xff\x00\xfe")
    with pytest.raises(OutputFormatError) as raised:
        deliver(make_spec([sm("blob")], output_formats="json"), clients, target)
    assert "file 'blob' is not UTF-8 text and cannot be written as json" in str(raised.value)
    assert isinstance(raised.value, FerryError)
    assert not target.exists() or not any(target.iterdir())


def test_the_files_hook_runs_after_each_swap_and_a_failure_is_retried(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.secret("db", "v1")
    seen: list[RenderedFiles] = []
    failing = [True]

    def hook(files: RenderedFiles) -> None:
        seen.append(files)
        if failing[0]:
            raise FerryError("the API is down")

    state = RefreshState(spec=make_spec([sm("db")], refresh_interval=60), clients=clients, target_dir=target)
    state.on_files = hook
    with pytest.raises(FerryError):
        refresh_once(state)
    assert (target / "db").read_bytes() == b"v1" and state.values == {}  # files written, values not kept
    failing[0] = False
    refresh_once(state)
    assert [files["db"][0] for files in seen] == [b"v1", b"v1"] and state.values


def test_the_sync_hook_is_made_only_for_secret_objects_and_needs_the_owner_env() -> None:
    assert secret_sync_hook(make_spec([sm("db")]), {}) is None
    spec = make_spec(
        [sm("db")], secret_objects=[{"secretName": "db", "type": "Opaque", "data": [{"objectName": "db", "key": "k"}]}]
    )
    with pytest.raises(ConfigError) as raised:
        secret_sync_hook(spec, {})
    assert "FERRY_POD_NAME, FERRY_POD_UID, FERRY_POD_NAMESPACE not set" in str(raised.value)


def test_the_role_command_prints_a_role_for_exactly_the_class_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A JSON round trip: no part shared between the two entries, so the YAML holds no alias.
    secret_objects = json.loads(json.dumps(SECRET_OBJECTS + [{**SECRET_OBJECTS[0], "secretName": "tls"}]))
    manifest = spc(parameters={"objects": "[]"}, secretObjects=secret_objects)
    path = tmp_path / "spc.yaml"
    path.write_text(yaml.safe_dump_all([{"kind": "Namespace"}, manifest]))
    assert main(["role", "--secret-provider-class", str(path), "--service-account", "shop-api"]) == 0
    role, binding = yaml.safe_load_all(capsys.readouterr().out)
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "shop"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["db", "tls"],
            "verbs": ["get", "create", "patch"],
        }
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shop-api", "namespace": "shop"}]
    assert role["metadata"]["name"] == binding["roleRef"]["name"] == "ferry-secret-sync:db:shop-api"


def test_the_role_command_explains_a_class_without_secret_objects(tmp_path: Path) -> None:
    path = tmp_path / "spc.yaml"
    path.write_text(yaml.safe_dump(spc(parameters={"objects": "[]"})))
    result = subprocess.run(
        [sys.executable, "-m", "fetcher", "role", "--secret-provider-class", str(path), "--service-account", "x"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no spec.secretObjects: its pods write no Kubernetes Secret and need no Role" in result.stderr
    assert "Traceback" not in result.stderr


def test_build_spec_leaves_secret_objects_empty_by_default() -> None:
    spec = build_spec(objects=[sm("db")], region=PRIMARY)
    assert spec.secret_objects == () and spec.output_formats == ()
