"""A role per object: AssumeRole from the pod's identity, against moto's STS over HTTP.

moto's AssumeRole returns keys but ignores session tags and SourceIdentity, so what Ferry SENDS is
checked on a loopback capture that forwards each request to moto and records it on the way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from fetcher import awsroles
from fetcher.__main__ import main
from fetcher.awsroles import PodIdentity, bounded_session_text
from fetcher.contract import SpecError, spec_from_json, spec_to_json
from fetcher.sources import fetch_all
from tests.support.aws import (
    LocalHttpStub,
    RecordedRequest,
    Reply,
    Seeder,
    fetcher_env,
    forwarding_sts,
    make_clients,
    make_spec,
    seed_in_account,
)

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]
ROLE = "arn:aws:iam::222233334444:role/shop-reader"
OTHER_ROLE = "arn:aws:iam::222233334444:role/billing-reader"
POD_ENV = {
    "FERRY_POD_NAMESPACE": "shop",
    "FERRY_POD_SERVICE_ACCOUNT": "api",
    "FERRY_POD_NAME": "api-7d9f8-x2x4q",
}


def form(request: RecordedRequest) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.body.decode()).items()}


def signing_keys(clients: Any) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    clients.on_send.append(
        lambda operation, headers: seen.append(
            (operation, headers["authorization"].split("Credential=", 1)[1].split("/", 1)[0])
        )
    )
    return seen


def test_an_object_is_read_with_its_role_and_the_request_names_the_pod(
    moto: Any, seed: Seeder, monkeypatch: pytest.MonkeyPatch, http_stub: StubFactory
) -> None:
    seed_in_account(moto.url, ROLE, "shared/db", "from the other account")
    seed.secret("own", "from the pod's own account")
    sts = http_stub(forwarding_sts(moto.url))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    for key, value in POD_ENV.items():
        monkeypatch.setenv(key, value)
    spec = make_spec(
        [
            {"objectName": "shared/db", "objectType": "secretsmanager", "roleArn": ROLE, "externalId": "shop-42"},
            {"objectName": "own", "objectType": "secretsmanager"},
        ]
    )
    clients = make_clients()
    keys = signing_keys(clients)
    try:
        values = fetch_all(spec, clients)
    finally:
        clients.close()
    assert values[0].data == b"from the other account"
    assert values[1].data == b"from the pod's own account"
    [assume] = sts.requests
    sent = form(assume)
    assert sent["Action"] == "AssumeRole" and sent["RoleArn"] == ROLE and sent["ExternalId"] == "shop-42"
    assert sent["RoleSessionName"] == "ferry.shop.api-7d9f8-x2x4q"
    assert sent["SourceIdentity"] == "api@shop"
    tags = {sent[f"Tags.member.{n}.Key"]: sent[f"Tags.member.{n}.Value"] for n in (1, 2, 3)}
    assert tags == {
        "kubernetes-namespace": "shop",
        "kubernetes-service-account": "api",
        "kubernetes-pod-name": POD_ENV["FERRY_POD_NAME"],
    }
    by_operation = dict(keys)
    assert by_operation["AssumeRole"] == "testing"  # signed with the pod's own (base) keys
    role_reads = [key for operation, key in keys if operation == "GetSecretValue"]
    assert "testing" in role_reads and any(key.startswith("ASIA") for key in role_reads)


def test_on_pod_identity_the_pods_own_transitive_tags_are_not_sent_again(
    moto: Any, monkeypatch: pytest.MonkeyPatch, http_stub: StubFactory
) -> None:
    """EKS Pod Identity's session tags are all transitive, with the same keys: STS fails an AssumeRole that repeats one.

    So on Pod Identity the session inherits EKS's own kubernetes-namespace, -service-account and -pod-name
    (set by EKS, not by the pod) and Ferry sends none; SourceIdentity and the session name still name the pod.
    """
    seed_in_account(moto.url, ROLE, "shared/db", "from the other account")
    expires = datetime.now(UTC) + timedelta(hours=1)
    keys = {"AccessKeyId": "ASIAPODIDENTITY", "SecretAccessKey": "s", "Token": "t", "Expiration": expires.isoformat()}
    agent = http_stub(lambda request: (200, {"Content-Type": "application/json"}, json.dumps(keys).encode()))
    sts = http_stub(forwarding_sts(moto.url))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for key, value in {
        **POD_ENV,
        "AWS_ENDPOINT_URL_STS": sts.url,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{agent.url}/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "projected-token",
    }.items():
        monkeypatch.setenv(key, value)
    clients = make_clients()
    try:
        values = fetch_all(
            make_spec([{"objectName": "shared/db", "objectType": "secretsmanager", "roleArn": ROLE}]), clients
        )
    finally:
        clients.close()
    assert values[0].data == b"from the other account"
    [assume] = sts.requests
    sent = form(assume)
    assert not [key for key in sent if key.startswith("Tags.")]
    assert sent["SourceIdentity"] == "api@shop" and sent["RoleSessionName"] == "ferry.shop.api-7d9f8-x2x4q"


def test_sessions_are_cached_per_role_and_bounded(moto: Any, seed: Seeder, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b"):
        seed_in_account(moto.url, ROLE, name, name)
    seed_in_account(moto.url, OTHER_ROLE, "c", "c")
    spec = make_spec(
        [
            {"objectName": "a", "objectType": "secretsmanager", "roleArn": ROLE},
            {"objectName": "b", "objectType": "secretsmanager", "roleArn": ROLE},
            {"objectName": "c", "objectType": "secretsmanager", "roleArn": OTHER_ROLE},
        ]
    )
    clients = make_clients()
    try:
        fetch_all(spec, clients)
        fetch_all(spec, clients)
        assert clients.calls.count("AssumeRole", service="sts") == 2  # one per role, reused on the second fetch
        monkeypatch.setattr(awsroles, "MAX_ROLE_SESSIONS", 1)
        fetch_all(spec, clients)
        assert len(clients.roles) == 1
    finally:
        clients.close()


def test_a_denied_assume_role_fails_naming_the_role_the_reason_and_the_fix(
    moto: Any, seed: Seeder, tmp_path: Path, http_stub: StubFactory
) -> None:
    seed.secret("shared/db", "never read")
    denial = (
        b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: "
        b"arn:aws:sts::111122223333:assumed-role/shop-api/x is not authorized to perform: sts:AssumeRole on "
        b"resource: arn:aws:iam::222233334444:role/shop-reader</Message></Error></ErrorResponse>"
    )
    sts = http_stub(lambda request: (403, {"Content-Type": "text/xml"}, denial))
    spec = make_spec([{"objectName": "shared/db", "objectType": "secretsmanager", "roleArn": ROLE}])
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), AWS_ENDPOINT_URL_STS=sts.url, **POD_ENV)
    code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")], env)
    message = (tmp_path / "t").read_text()
    assert code == 1
    assert ROLE in message and "AccessDenied" in message
    assert "trust policy" in message and "sts:TagSession" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


TRANSITIVE_REFUSAL = (
    b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameterValue</Code><Message>One or more keys are "
    b"already transitively tagged: kubernetes-namespace</Message></Error></ErrorResponse>"
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # The pod's own session already carries kubernetes-namespace as a transitive tag (docs/configuration.md).
        ((400, {"Content-Type": "text/xml"}, TRANSITIVE_REFUSAL), "InvalidParameterValue"),
        # An STS that answers more than any reply may hold: the failure is STS's, so the message says so.
        ((200, {"Content-Type": "text/xml"}, b"<a>" + b"z" * (5 * 1024 * 1024) + b"</a>"), "ReplyTooLargeError"),
    ],
)
def test_a_failed_assume_role_names_the_role_whatever_failed(
    moto: Any, tmp_path: Path, http_stub: StubFactory, answer: Reply, expected: str
) -> None:
    sts = http_stub(lambda request: answer)
    spec = make_spec([{"objectName": "shared/db", "objectType": "secretsmanager", "roleArn": ROLE}])
    env = fetcher_env(
        moto.url, FERRY_SPEC=spec_to_json(spec), AWS_ENDPOINT_URL_STS=sts.url, FERRY_STARTUP_DEADLINE="0", **POD_ENV
    )
    code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")], env)
    message = (tmp_path / "t").read_text()
    assert code == 1 and len(sts.requests) == 1
    assert ROLE in message and expected in message and "\n" not in message and len(message) < 1200


def test_session_names_keep_to_stss_rules() -> None:
    long_pod = PodIdentity({"FERRY_POD_NAMESPACE": "n" * 63, "FERRY_POD_NAME": "p" * 253})
    name = long_pod.session_name()
    assert len(name) == 64
    other = PodIdentity({"FERRY_POD_NAMESPACE": "n" * 63, "FERRY_POD_NAME": "p" * 252 + "q"}).session_name()
    assert other != name  # the hash of the whole keeps them apart
    assert bounded_session_text("a b/c:d") == "a-b-c-d"
    assert bounded_session_text("x") == "x-"


@pytest.mark.parametrize(
    ("role", "region", "field"),
    [
        ("arn:aws:iam::12345:role/short-account", "us-east-1", "roleArn"),
        ("arn:aws:iam::123456789012:user/not-a-role", "us-east-1", "roleArn"),
        ("arn:aws-cn:iam::123456789012:role/china", "us-east-1", "roleArn"),
        ("arn:aws:iam::123456789012:role/commercial", "cn-north-1", "roleArn"),
        # `$` matches before a final line break: the ARN would reach STS, messages and logs with it.
        ("arn:aws:iam::123456789012:role/newline\n", "us-east-1", "roleArn"),
    ],
)
def test_admission_checks_the_role_arn_and_its_partition(role: str, region: str, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        make_spec([{"objectName": "db", "objectType": "secretsmanager", "roleArn": role}], region=region)


def test_a_spec_names_no_more_roles_than_the_fetcher_keeps_sessions_for() -> None:
    """Past the session cache's bound, each refresh would evict and assume every role again, in turn."""

    def role_objects(count: int) -> list[dict[str, Any]]:
        return [
            {"objectName": f"s{n}", "objectType": "secretsmanager", "roleArn": f"arn:aws:iam::222233334444:role/r{n}"}
            for n in range(count)
        ]

    assert len({obj.role for obj in make_spec(role_objects(awsroles.MAX_ROLE_SESSIONS)).objects}) == 32
    with pytest.raises(SpecError, match=r"objects: name 33 different roles; at most 32"):
        make_spec(role_objects(awsroles.MAX_ROLE_SESSIONS + 1))


def test_external_id_needs_a_role_and_stss_charset() -> None:
    with pytest.raises(SpecError, match="externalId"):
        make_spec([{"objectName": "db", "objectType": "secretsmanager", "externalId": "abc"}])
    with pytest.raises(SpecError, match="externalId"):
        make_spec([{"objectName": "db", "objectType": "secretsmanager", "roleArn": ROLE, "externalId": "a b"}])
    with pytest.raises(SpecError, match="externalId"):
        make_spec([{"objectName": "db", "objectType": "secretsmanager", "roleArn": ROLE, "externalId": "ok-1\n"}])
    ok = make_spec([{"objectName": "db", "objectType": "secretsmanager", "roleArn": ROLE, "externalId": "ok-1"}])
    assert ok.objects[0].role is not None and ok.objects[0].role.external_id == "ok-1"
    assert spec_from_json(spec_to_json(ok)) == ok


def test_a_session_is_renewed_before_it_expires(moto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fetcher import awscreds

    seed_in_account(moto.url, ROLE, "a", "a")
    spec = make_spec([{"objectName": "a", "objectType": "secretsmanager", "roleArn": ROLE}])
    clients = make_clients()
    try:
        fetch_all(spec, clients)
        fetch_all(spec, clients)
        assert clients.calls.count("AssumeRole") == 1  # an hour of life left: reused
        monkeypatch.setattr(awscreds, "REFRESH_BEFORE_SECONDS", 2 * 3600)  # now "about to expire"
        fetch_all(spec, clients)
        assert clients.calls.count("AssumeRole") == 2
    finally:
        clients.close()


def test_a_discovery_lists_with_its_role(moto: Any, seed: Seeder) -> None:
    seed_in_account(moto.url, ROLE, "team/a", "a from account 2222")
    seed.secret("team/b", "the pod's own account: not listed")
    spec = make_spec([{"objectName": "team/", "objectType": "secretsmanager", "discover": True, "roleArn": ROLE}])
    clients = make_clients()
    try:
        [value] = fetch_all(spec, clients).values()
    finally:
        clients.close()
    assert value.members == (("team/a", b"a from account 2222"),)
