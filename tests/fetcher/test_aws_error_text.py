"""What AWS (or anything answering in its place) says is quoted into our messages bounded, on one line, and honestly.

Why it exists: the termination message is what an app team reads when its pod
does not start. An endpoint that answers with a megabyte of error code or
message, thousands of "invalid" names, or control characters must not turn
that message into noise; and a hint must not point at a quote that is not there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fetcher.__main__ import main
from fetcher.contract import spec_to_json
from tests.support.aws import PRIMARY, LocalHttpStub, RecordedRequest, Reply, aws_json_error, fetcher_env, make_spec

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]


def init_against(stub: LocalHttpStub, moto: Any, tmp_path: Path, objects: list[dict[str, Any]]) -> str:
    """Run `init` in-process with the primary region answered by `stub`; return the termination message."""
    termination = tmp_path / "termination-log"
    env = fetcher_env(
        moto.url,
        FERRY_SPEC=spec_to_json(make_spec(objects)),
        FERRY_TERMINATION_LOG=str(termination),
        FERRY_AWS_MAX_ATTEMPTS="1",
        **{"FERRY_ENDPOINT_URL_" + PRIMARY.upper().replace("-", "_"): stub.url},
    )
    assert main(["init", "--dir", str(tmp_path / "out")], env) == 1
    return termination.read_text()


def test_a_huge_error_code_and_message_stay_a_few_hundred_characters(
    http_stub: StubFactory, moto: Any, tmp_path: Path
) -> None:
    stub = http_stub(lambda request: aws_json_error(400, "Odd" * 50_000, "why " * 250_000))
    message = init_against(stub, moto, tmp_path, [{"objectName": "db", "objectType": "secretsmanager"}])
    assert len(message) < 800, message[:200]
    assert message.startswith("secret 'db' in us-east-1: OddOdd")


def test_control_characters_from_aws_never_reach_the_message(http_stub: StubFactory, moto: Any, tmp_path: Path) -> None:
    stub = http_stub(lambda request: aws_json_error(400, "ValidationException", "line one\nline\x1b[31m two\r\x00"))
    message = init_against(stub, moto, tmp_path, [{"objectName": "db", "objectType": "secretsmanager"}])
    assert "(line one line [31m two)" in message
    assert all(char.isprintable() for char in message)


@pytest.mark.parametrize(("aws_message", "parentheses"), [("", False), ("the reason", True)])
def test_the_hint_points_at_aws_message_only_when_there_is_one(
    http_stub: StubFactory, moto: Any, tmp_path: Path, aws_message: str, parentheses: bool
) -> None:
    stub = http_stub(lambda request: aws_json_error(400, "SomethingUnusual", aws_message))
    message = init_against(stub, moto, tmp_path, [{"objectName": "db", "objectType": "secretsmanager"}])
    assert ("(the reason)" in message) is parentheses
    assert ("see AWS's message in parentheses" in message) is parentheses
    if not parentheses:
        assert "AWS sent no message with this error; look up SomethingUnusual in the Secrets Manager API" in message


def test_thousands_of_invalid_names_echoed_back_are_listed_bounded(
    http_stub: StubFactory, moto: Any, tmp_path: Path
) -> None:
    names = [f"/echoed/{index}/" + "x" * 500 for index in range(5000)]
    body = json.dumps({"Parameters": [], "InvalidParameters": names}).encode()
    stub = http_stub(lambda request: (200, {"Content-Type": "application/x-amz-json-1.1"}, body))
    message = init_against(stub, moto, tmp_path, [{"objectName": "/app/url", "objectType": "ssmparameter"}])
    assert len(message) < 2500
    assert "and 4990 more" in message
