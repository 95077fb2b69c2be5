"""The one spec model: every validation rule names the field and says how to fix it; JSON round-trips."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from fetcher.contract import (
    MAX_OBJECTS,
    MAX_OBJECTS_YAML_BYTES,
    SPEC_ENV_VAR,
    FailoverObject,
    FetchSpec,
    JmesPathEntry,
    Notify,
    ObjectSpec,
    SpecError,
    build_spec,
    parse_objects_yaml,
    spec_from_json,
    spec_from_secret_provider_class,
    spec_to_json,
)
from tests.support.aws import REPO_ROOT

SM_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
SSM_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/app/url"


def sm(name: str = "db", **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", **fields}


def ssm(name: str = "/app/url", **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "ssmparameter", **fields}


def problems(objects: Any, **options: Any) -> str:
    """The SpecError message for these inputs (fails the test if they are accepted)."""
    options.setdefault("region", "us-east-1")
    with pytest.raises(SpecError) as caught:
        build_spec(objects=objects, **options)
    return str(caught.value)


def accepted(objects: Any, **options: Any) -> FetchSpec:
    options.setdefault("region", "us-east-1")
    return build_spec(objects=objects, **options)


# --- Accepted input and defaults. ---------------------------------------------


def test_a_full_ascp_objects_yaml_is_accepted_with_ascp_defaults() -> None:
    spec = accepted(
        """
- objectName: db
  objectType: secretsmanager
  objectVersionLabel: AWSCURRENT
  jmesPath:
    - path: username
      objectAlias: db-user
    - path: '"db-pass"'
      objectAlias: db-pass
      filePermission: "0600"
- objectName: /app/url
  objectType: ssmparameter
  objectVersion: 3
- objectName: arn:aws:ssm:us-east-1:123456789012:parameter/app/flag
  objectAlias: flag
  filePermission: "0640"
""",
        failover_region="us-west-2",
        refresh_interval="5m",
        file_uid=1000,
        file_gid=2000,
        notify_url="http://localhost:8080/-/reload",
        notify_signal="hup:nginx",
    )
    db, url, flag = spec.objects
    assert db == ObjectSpec(
        object_name="db",
        object_type="secretsmanager",
        object_version_label="AWSCURRENT",
        jmes_path=(
            JmesPathEntry("username", "db-user"),
            JmesPathEntry('"db-pass"', "db-pass", 0o600),
        ),
    )
    assert url.object_version == "3"  # SSM versions are numbers; YAML may leave them unquoted
    assert flag.object_type == "ssmparameter"  # inferred from the ARN
    assert (flag.file_permission, db.file_permission) == (0o640, 0o644)
    assert spec.path_translation == "_"
    assert spec.refresh_seconds == 300.0
    assert spec.notify == Notify(url="http://localhost:8080/-/reload", signal="SIGHUP", process="nginx")
    assert [(out.name, out.mode) for out in spec.output_files()] == [
        ("db", 0o644),
        ("db-user", 0o644),  # a jmesPath file inherits its object's mode
        ("db-pass", 0o600),
        ("_app_url", 0o644),  # ASCP's path translation of "/" to "_"
        ("flag", 0o640),
    ]


def test_path_translation_off_keeps_subdirectories_and_strips_the_leading_slash() -> None:
    spec = accepted([ssm("/app/db/url"), sm("db", objectAlias="db")], path_translation="False")
    assert spec.path_translation is None
    assert [out.name for out in spec.output_files()] == ["app/db/url", "db"]


@pytest.mark.parametrize("alias", ["config/db", "a/b/c", "db/"])
def test_an_alias_with_a_slash_is_denied(alias: str) -> None:
    # Stricter than ASCP (which translates it): Ferry denies "/" in an alias outright.
    problem = problems([sm("db", objectAlias=alias)])
    assert "objects[0].objectAlias" in problem and "contains a slash" in problem


def test_a_custom_translation_character_is_used() -> None:
    spec = accepted([ssm("/a/b")], path_translation="-")
    assert spec.output_files()[0].name == "-a-b"


def test_secrets_manager_may_name_both_a_version_and_a_label() -> None:
    spec = accepted([sm(objectVersion="v1", objectVersionLabel="AWSCURRENT")])
    assert (spec.objects[0].object_version, spec.objects[0].object_version_label) == ("v1", "AWSCURRENT")


def test_arn_object_types_are_inferred() -> None:
    spec = accepted([{"objectName": SM_ARN, "objectAlias": "db"}, {"objectName": SSM_ARN, "objectAlias": "url"}])
    assert [obj.object_type for obj in spec.objects] == ["secretsmanager", "ssmparameter"]


# --- Canonical JSON. -------------------------------------------------------------


def test_the_spec_round_trips_through_canonical_json() -> None:
    spec = accepted(
        [
            sm(
                "db",
                objectAlias="db",
                failoverObject={"objectName": "db-replica"},
                jmesPath=[{"path": "u", "objectAlias": "user", "filePermission": "0400"}],
            ),
            ssm("/p", objectVersionLabel="stable", filePermission="0600"),
        ],
        failover_region="us-west-2",
        path_translation="False",
        refresh_interval="30s",
        file_uid=1000,
        file_gid=3000,
        notify_url="http://127.0.0.1:9000/reload",
        notify_signal="SIGUSR1:app",
    )
    text = spec_to_json(spec)
    assert spec_from_json(text) == spec
    assert spec_to_json(spec_from_json(text)) == text
    wire = json.loads(text)
    assert list(wire) == sorted(wire)  # canonical: sorted keys, no whitespace
    assert " " not in text.replace("http://127.0.0.1:9000/reload", "")
    assert wire["pathTranslation"] is None and wire["v"] == 1


def test_equal_specs_give_identical_bytes() -> None:
    first = accepted([sm("a"), ssm("/b")], refresh_interval="1m")
    second = accepted(
        "- {objectType: secretsmanager, objectName: a}\n- {objectName: /b, objectType: ssmparameter}",
        refresh_interval="60s",
    )
    assert spec_to_json(first) == spec_to_json(second)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"v": 99, "objects": [], "region": "us-east-1"}', "spec version 99 is not 1"),
    ],
)
def test_a_broken_env_var_is_reported_by_its_name(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_json(text)
    assert SPEC_ENV_VAR in str(caught.value) and expected in str(caught.value)


def test_the_env_var_is_validated_again_when_parsed() -> None:
    wire = json.loads(spec_to_json(accepted([sm("db")])))
    wire["objects"][0]["objectAlias"] = "../escape"
    with pytest.raises(SpecError) as caught:
        spec_from_json(json.dumps(wire))
    assert "objects[0].objectAlias" in str(caught.value) and "climbs out" in str(caught.value)


# --- Every rule: the message names the field and says how to fix it. -------------


@pytest.mark.parametrize(
    ("objects", "field", "fix"),
    [
        ([{"objectType": "secretsmanager"}], "objects[0].objectName", "is missing"),
        ([{"objectName": "", "objectType": "secretsmanager"}], "objects[0].objectName", "is missing"),
        (
            [{"objectName": "arn:aws:secretsmanager:us-east-1:12345:secret:db"}],
            "objects[0].objectName",
            "is not a valid ARN; expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME",
        ),
        ([{"objectName": "arn:aws:secretsmanager:us-east-1:123456789012"}], "objects[0].objectName", "not a valid ARN"),
        (
            [{"objectName": "arn:aws:sqs:us-east-1:123456789012:queue"}],
            "objects[0].objectName",
            "is not a Secrets Manager secret or SSM parameter",
        ),
        (
            [{"objectName": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db", "objectAlias": "db"}],
            "objects[0].objectName",
            "the ARN's region eu-west-1 differs from the region in use (us-east-1)",
        ),
        ([{"objectName": "/p", "objectType": "ssm"}], "objects[0].objectType", "write ssmparameter"),
        (
            [{"objectName": "db", "objectType": "vault"}],
            "objects[0].objectType",
            "is not secretsmanager or ssmparameter",
        ),
        ([{"objectName": "db"}], "objects[0].objectType", "is missing; set secretsmanager or ssmparameter"),
        (
            [{"objectName": SM_ARN, "objectType": "ssmparameter", "objectAlias": "db"}],
            "objects[0].objectType",
            "is ssmparameter but the ARN is for secretsmanager; make them agree",
        ),
        (
            [ssm(objectVersion="2", objectVersionLabel="stable")],
            "objects[0].objectVersionLabel",
            "takes objectVersion or objectVersionLabel, not both",
        ),
        ([sm("db"), sm("db")], "objects[1].objectName", "which objects[0].objectName already gives"),
        ([sm("a", objectAlias="x"), sm("b", objectAlias="x")], "objects[1].objectAlias", "already gives"),
        ([sm("a/b"), sm("a_b")], "objects[1].objectName", "already gives after path translation"),
        (
            [sm("db", jmesPath=[{"path": "u", "objectAlias": "other"}]), sm("other")],
            "objects[1].objectName",
            "which objects[0].jmesPath[0].objectAlias already gives",
        ),
        ([sm("db", objectAlias="/etc/passwd")], "objects[0].objectAlias", "is an absolute path"),
        ([sm("db", objectAlias="..")], "objects[0].objectAlias", "climbs out of the volume"),
        ([sm("db", objectAlias=".")], "objects[0].objectAlias", "climbs out of the volume"),
        ([sm("db", objectAlias="../x")], "objects[0].objectAlias", "climbs out of the volume"),
        ([sm("db", objectAlias="a/../b")], "objects[0].objectAlias", "climbs out of the volume"),
        ([sm("db", objectAlias="..data")], "objects[0].objectAlias", "reserved for the atomic-swap directories"),
        ([sm("db", objectAlias="a\x07b")], "objects[0].objectAlias", "contains a control character"),
        ([sm("db", objectAlias="a\\b")], "objects[0].objectAlias", "contains a backslash"),
        ([sm("db", objectAlias="a\u2215..\u2215b")], "objects[0].objectAlias", "looks like a slash"),
        ([sm("db", objectAlias="a\u2044b")], "objects[0].objectAlias", "looks like a slash"),
        ([sm("db", objectAlias="a\uff0f..\uff0fb")], "objects[0].objectAlias", "looks like a slash"),
        ([sm("db", filePermission="644")], "objects[0].filePermission", '4 octal digits like "0644"'),
        ([sm("db", filePermission="0998")], "objects[0].filePermission", "4 octal digits"),
        ([sm("db", filePermission="0o644")], "objects[0].filePermission", "4 octal digits"),
        ([sm("db", filePermission=420)], "objects[0].filePermission", "must be a quoted string"),
        (
            [sm("db", jmesPath=[{"objectAlias": "u"}])],
            "objects[0].jmesPath[0].path",
            "is missing; give the JMESPath of the JSON key",
        ),
        (
            [sm("db", jmesPath=[{"path": "u"}])],
            "objects[0].jmesPath[0].objectAlias",
            "is missing; name the file this key is written to",
        ),
        ([sm("db", jmesPath={"path": "u"})], "objects[0].jmesPath", "must be a list of {path, objectAlias}"),
        (
            [sm("db", jmesPath=[{"path": "db-user", "objectAlias": "u"}])],
            "objects[0].jmesPath[0].path",
            'a key with "-" must be quoted',
        ),
        (
            [sm("db", jmesPath=[{"path": "u", "objectAlias": "/abs"}])],
            "objects[0].jmesPath[0].objectAlias",
            "is an absolute path",
        ),
        (
            [sm("db", jmesPath=[{"path": "u", "objectAlias": "u", "filePermission": "99"}])],
            "objects[0].jmesPath[0].filePermission",
            "4 octal digits",
        ),
        ([None], "objects[0]", "is empty (a lone '-'); remove it or give it an objectName"),
        (["db"], "objects[0]", "must be a mapping with objectName, got a string"),
        ([sm("db", objectAliass="x")], "objects[0].objectAliass", "did you mean objectAlias?"),
        ([sm("db", objectTemplate="{{ .x }}")], "objects[0].objectTemplate", "is not supported by Ferry"),
        ([sm("db", objectName=5)], "objects[0].objectName", "must be a string, got a number; quote it"),
    ],
)
def test_each_invalid_object_is_denied_naming_its_field(objects: list[Any], field: str, fix: str) -> None:
    message = problems(objects)
    assert f"{field}: " in message
    assert fix in message


@pytest.mark.parametrize(
    ("failover", "options", "field", "fix"),
    [
        ({"objectName": "db-replica"}, {"failover_region": "us-west-2"}, "objects[0].objectAlias", "is required"),
        (
            {"objectName": "db-replica"},
            {},
            "objects[0].failoverObject",
            "needs a failover region; set ferry.dev/failover-region or failoverRegion",
        ),
        (
            {"objectName": "db-replica", "objectVersion": "v2"},
            {"failover_region": "us-west-2", "alias": "db"},
            "objects[0].failoverObject.objectVersion",
            "(v2) must equal the primary's objectVersion (unset)",
        ),
        (
            {"objectName": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db"},
            {"failover_region": "us-west-2", "alias": "db"},
            "objects[0].failoverObject.objectName",
            "differs from the region in use (us-west-2)",
        ),
        (
            {"objectName": "arn:aws:ssm:us-west-2:123456789012:parameter/db"},
            {"failover_region": "us-west-2", "alias": "db"},
            "objects[0].failoverObject.objectType",
            "make them agree",
        ),
        ({}, {"failover_region": "us-west-2", "alias": "db"}, "objects[0].failoverObject.objectName", "is missing"),
        (
            {"objectName": "db-replica", "objectNmae": "x"},
            {"failover_region": "us-west-2", "alias": "db"},
            "objects[0].failoverObject.objectNmae",
            "did you mean objectName?",
        ),
    ],
)
def test_failover_objects_are_checked(failover: dict[str, Any], options: dict[str, Any], field: str, fix: str) -> None:
    alias = options.pop("alias", None)
    obj = sm("db", failoverObject=failover, **({"objectAlias": alias} if alias else {}))
    message = problems([obj], **options)
    assert f"{field}: " in message and fix in message


def test_failover_versions_must_match_the_primary() -> None:
    obj = sm("db", objectAlias="db", objectVersion="v1", failoverObject={"objectName": "db2", "objectVersion": "v1"})
    spec = accepted([obj], failover_region="us-west-2")
    assert spec.objects[0].failover_object == FailoverObject("db2", "v1")
    assert spec.objects[0].failover_version() == ("v1", None)


def test_ssm_failover_objects_may_not_name_both_version_and_label() -> None:
    obj = ssm(
        "/p",
        objectAlias="p",
        objectVersion="2",
        failoverObject={"objectName": "/p", "objectVersion": "2", "objectVersionLabel": "x"},
    )
    assert "objects[0].failoverObject.objectVersionLabel: an SSM parameter takes" in problems(
        [obj], failover_region="us-west-2"
    )


@pytest.mark.parametrize(
    ("options", "field", "fix"),
    [
        ({"region": None}, "region", "no AWS region is set"),
        ({"region": "mars-1"}, "region", "is not an AWS region; write it like us-east-1"),
        ({"failover_region": "us-east-1"}, "failoverRegion", "is the same as the region (us-east-1)"),
        ({"failover_region": "west"}, "failoverRegion", "is not an AWS region"),
        ({"path_translation": "ab"}, "pathTranslation", "must be a single printable character"),
        ({"path_translation": "/"}, "pathTranslation", "must be a single printable character"),
        ({"refresh_interval": "5s"}, "refreshInterval", "is below the floor of 10s; use 10s or more, or 0"),
        ({"refresh_interval": "soon"}, "refreshInterval", "is not a duration; write it like 30s"),
        ({"refresh_interval": "200h"}, "refreshInterval", "is over 7 days"),
        ({"notify_url": "http://example.com/reload"}, "notifyUrl", "must be an http:// URL on localhost"),
        ({"notify_url": "https://localhost/reload"}, "notifyUrl", "must be an http:// URL on localhost"),
        ({"notify_signal": "SIGKILL:app"}, "notifySignal", "must be SIGNAL:process-name"),
        ({"notify_signal": "SIGHUP"}, "notifySignal", "must be SIGNAL:process-name"),
        ({"file_uid": -1}, "fileUid", "must be a non-negative integer"),
        ({"file_gid": True}, "fileGid", "must be a non-negative integer"),
    ],
)
def test_each_invalid_option_is_denied_naming_its_field(options: dict[str, Any], field: str, fix: str) -> None:
    message = problems([sm("db")], **options)
    assert f"{field}: " in message and fix in message


def test_a_huge_bad_value_is_not_echoed_in_full() -> None:
    message = problems([sm("db")], region="r" * 100_000)
    assert message.startswith("region: 'rrrr") and "is not an AWS region" in message and len(message) < 200


def test_refresh_zero_means_no_sidecar() -> None:
    assert accepted([sm("db")], refresh_interval="0").refresh_seconds == 0.0


def test_translation_off_still_denies_traversal_through_the_object_name() -> None:
    message = problems([ssm("/../etc/passwd")], path_translation="False")
    assert "objects[0].objectName: gives the file name '../etc/passwd'" in message
    assert "set objectAlias to a plain name" in message


def test_a_file_cannot_also_be_a_directory() -> None:
    message = problems([ssm("/a"), ssm("/a/b")], path_translation="False")
    assert "objects[1].objectName: writes 'a/b' below 'a', which objects[0].objectName writes as a file" in message


def test_every_problem_is_reported_in_one_round_trip() -> None:
    error = pytest.raises(
        SpecError,
        build_spec,
        objects=[{"objectName": "db", "objectType": "ssm"}, sm("x", filePermission="777"), None],
        region="nowhere",
    ).value
    fields = [problem.field for problem in error.problems]
    assert fields == ["region", "objects[0].objectType", "objects[1].filePermission", "objects[2]"]


def test_messages_use_the_names_the_user_wrote() -> None:
    message = problems(
        [sm("db")],
        region="bad",
        field_names={"region": "ferry.dev/region", "objects": "ferry.dev/objects"},
    )
    assert message.startswith("ferry.dev/region: 'bad' is not an AWS region")
    assert "ferry.dev/objects[0].objectType" in problems(
        [{"objectName": "x"}], field_names={"objects": "ferry.dev/objects"}
    )


def test_too_many_objects_are_denied() -> None:
    message = problems([sm(f"s{index}") for index in range(MAX_OBJECTS + 1)])
    assert f"objects: has {MAX_OBJECTS + 1} objects; the limit is {MAX_OBJECTS}" in message


# --- The objects YAML itself. ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("- objectName: db\n  objectType: [secretsmanager", "is not valid YAML at line"),
        ("objectName: db", "must be a YAML list of objects (start each with '- objectName:'), got a mapping"),
        ("", "is empty; list at least one object"),
        ("[]", "is empty; list at least one object"),
        ("- &a {objectName: db, objectType: secretsmanager}\n- *a", "uses YAML anchors or aliases"),
        ("- " + "[" * 10 + "]" * 10, "is nested deeper than 8 levels"),
    ],
)
def test_bad_objects_yaml_is_denied(text: str, fix: str) -> None:
    message = problems(text)
    assert message.startswith("objects: ") and fix in message


def test_a_yaml_bomb_is_denied_before_it_expands() -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for level in range(1, 9):
        previous = chr(ord("a") + level - 1)
        name = chr(ord("a") + level)
        bomb += f"{name}: &{name} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"
    with pytest.raises(SpecError) as caught:
        parse_objects_yaml(bomb)
    assert "anchors or aliases" in str(caught.value)


def test_objects_yaml_over_64_kib_is_denied() -> None:
    text = "- objectName: db\n  objectType: secretsmanager\n" + "# padding\n" * (MAX_OBJECTS_YAML_BYTES // 10)
    message = problems(text)
    assert f"the limit is {MAX_OBJECTS_YAML_BYTES}" in message and "Split the objects" in message


# --- SecretProviderClass input. -----------------------------------------------------


def spc(parameters: dict[str, Any], provider: str = "aws") -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app-secrets", "namespace": "shop"},
        "spec": {"provider": provider, "parameters": parameters},
    }


def test_a_secret_provider_class_gives_the_same_spec_as_annotations() -> None:
    objects = "- objectName: db\n  objectType: secretsmanager\n"
    from_spc = spec_from_secret_provider_class(spc({"objects": objects, "region": "eu-west-1"}), region="us-east-1")
    assert from_spc == build_spec(objects=objects, region="eu-west-1")  # the SPC's own region wins
    fallback = spec_from_secret_provider_class(spc({"objects": objects}), region="us-east-1")
    assert fallback.region == "us-east-1"


@pytest.mark.parametrize(
    ("manifest", "fix"),
    [
        (spc({"objects": "- objectName: db\n  objectType: secretsmanager"}, provider="vault"), "spec.provider"),
        (spc({"region": "us-east-1"}), "spec.parameters.objects: is missing"),
        ({**spc({"objects": "[]"}), "kind": "Secret"}, "expected kind SecretProviderClass"),
        (spc({"objects": "- objectName: db\n  objectType: ssm", "region": "us-east-1"}), "objectType"),
        (spc({"objects": "- objectName: db\n  objectType: secretsmanager", "region": "x"}), "spec.parameters.region"),
    ],
)
def test_a_bad_secret_provider_class_is_named_in_the_message(manifest: dict[str, Any], fix: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_secret_provider_class(manifest, region="us-east-1")
    assert str(caught.value).startswith("SecretProviderClass shop/app-secrets: ")
    assert fix in str(caught.value)


def test_the_spec_model_never_imports_the_aws_sdk() -> None:
    check = "import sys, fetcher.contract; assert not {'boto3', 'botocore'} & set(sys.modules), sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_spec_error_is_a_ferry_error_so_the_cli_catches_one_root() -> None:
    from fetcher.errors import FerryError

    with pytest.raises(FerryError):
        spec_from_json("{not json")


def test_a_numeric_refresh_keeps_the_seven_day_ceiling() -> None:
    with pytest.raises(SpecError) as caught:
        build_spec(objects=[sm("db")], region="us-east-1", refresh_interval=8 * 24 * 3600.0)
    assert "refreshInterval" in str(caught.value) and "over 7 days" in str(caught.value)
    assert build_spec(objects=[sm("db")], region="us-east-1", refresh_interval=0.2).refresh_seconds == 0.2


def test_the_annotation_keys_are_listed_explicitly() -> None:
    from fetcher.contract import ANNOTATION_KEYS, ANNOTATION_STATUS, iter_annotation_keys

    assert tuple(iter_annotation_keys()) == ANNOTATION_KEYS
    assert len(set(ANNOTATION_KEYS)) == len(ANNOTATION_KEYS) == 20
    assert ANNOTATION_STATUS in ANNOTATION_KEYS and all(key.startswith("ferry.dev/") for key in ANNOTATION_KEYS)


def test_a_spec_with_thousands_of_problems_gets_a_bounded_message() -> None:
    from fetcher.contract import MAX_MESSAGE_CHARS

    objects = "".join(f"- objectName: 'bad name {i} ' \n  objectType: nonsense\n" for i in range(200))
    with pytest.raises(SpecError) as raised:
        build_spec(objects=objects, region="eu-west-1")
    message = raised.value.message
    assert len(message) <= MAX_MESSAGE_CHARS
    assert message.startswith("objects[0]")
    assert "more problems: fix these and submit again" in message
    # Every problem is still there for a caller that wants them all.
    assert len(raised.value.problems) >= 200


def test_manifests_refuse_yaml_aliases_before_expanding_them() -> None:
    from fetcher.contract import ManifestError, load_manifests

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)]
    with pytest.raises(ManifestError, match="anchor or alias"):
        load_manifests("\n".join(levels), "bomb.yaml")
    with pytest.raises(ManifestError, match="nested deeper"):
        load_manifests("a: " + "[" * 100 + "]" * 100, "deep.yaml")
    assert load_manifests("kind: SecretProviderClass\n---\n", "ok.yaml") == [{"kind": "SecretProviderClass"}, None]


@pytest.mark.parametrize("interval", ["30d", "8d", "7d1s"])
def test_a_refresh_interval_in_days_over_the_maximum_names_the_maximum(interval: str) -> None:
    message = problems([sm("a")], refresh_interval=interval)
    assert "over 7 days" in message and "not a duration" not in message


def test_bare_numbers_are_seconds_and_days_count() -> None:
    assert accepted([sm("a")], refresh_interval="90").refresh_seconds == 90.0
    assert accepted([sm("a")], refresh_interval="1d").refresh_seconds == 86400.0
