"""Fleets that start at once: `init` waits out throttling, 5xx and slow credentials within its start-up deadline.

The credential cases run against moto over HTTP (IRSA's STS exchange) and a loopback stand-in for the
Pod Identity agent; the throttling case against a loopback AWS endpoint that throttles, then answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fetcher.__main__ import main
from fetcher.contract import spec_to_json
from fetcher.errors import AwsRejectedError, AwsUnavailableError, ConfigError, ObjectErrors
from fetcher.startup import DEFAULT_STARTUP_DEADLINE, deadline_from_env, within_deadline, worth_waiting
from tests.support.aws import LocalHttpStub, RecordedRequest, Reply, Seeder, aws_json_error, fetcher_env, make_spec

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]
ROLE_ARN = "arn:aws:iam::123456789012:role/shop-api"


def unavailable() -> AwsUnavailableError:
    return AwsUnavailableError(
        object_name="db", region="us-east-1", code="ThrottlingException", operation="GetSecretValue", hint="later"
    )


def denied() -> AwsRejectedError:
    return AwsRejectedError(
        object_name="db", region="us-east-1", code="AccessDeniedException", operation="GetSecretValue", hint="grant"
    )


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_transient_failures_are_retried_until_delivery_succeeds() -> None:
    clock = FakeTime()
    failures = [unavailable(), ObjectErrors([unavailable(), unavailable()])]

    def deliver() -> str:
        if failures:
            raise failures.pop(0)
        return "delivered"

    assert within_deadline(deliver, 60, sleep=clock.sleep, clock=lambda: clock.now, rng=lambda: 0.5) == "delivered"
    assert clock.sleeps == [0.25, 0.5]  # full jitter (rng 0.5) of 0.5 s, then 1 s


def test_past_the_deadline_the_last_error_is_raised_as_today() -> None:
    clock = FakeTime()
    calls = 0

    def deliver() -> None:
        nonlocal calls
        calls += 1
        raise unavailable()

    with pytest.raises(AwsUnavailableError, match="ThrottlingException"):
        within_deadline(deliver, 30, sleep=clock.sleep, clock=lambda: clock.now, rng=lambda: 1.0)
    assert clock.now == 30  # the last wait is shortened to end at the deadline, and one last try is made
    assert calls > 3
    assert max(clock.sleeps) <= 15.0


def test_an_answer_that_time_does_not_change_fails_at_once() -> None:
    clock = FakeTime()
    with pytest.raises(ObjectErrors):
        within_deadline(
            lambda: (_ for _ in ()).throw(ObjectErrors([unavailable(), denied()])),
            60,
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    assert clock.sleeps == []
    assert not worth_waiting(denied())


def test_the_deadline_setting() -> None:
    assert deadline_from_env({}) == DEFAULT_STARTUP_DEADLINE
    assert deadline_from_env({"FERRY_STARTUP_DEADLINE": "45"}) == 45
    assert deadline_from_env({"FERRY_STARTUP_DEADLINE": "0"}) == 0
    for bad in ("soon", "-1", "99999"):
        with pytest.raises(ConfigError, match="FERRY_STARTUP_DEADLINE"):
            deadline_from_env({"FERRY_STARTUP_DEADLINE": bad})


def init(moto_url: str, spec: Any, out: Path, **extra: str) -> tuple[int, str]:
    termination = out.parent / "termination"
    env = fetcher_env(moto_url, FERRY_SPEC=spec_to_json(spec), **extra)
    code = main(["init", "--dir", str(out), "--termination-log", str(termination)], env)
    return code, termination.read_text() if termination.exists() else ""


def irsa_env(moto_url: str, token: Path) -> dict[str, str]:
    env = fetcher_env(moto_url, AWS_ROLE_ARN=ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE=str(token))
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    return env


def test_init_waits_for_the_irsa_token_file_to_be_mounted(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed.secret("db", "via irsa, late")
    token = tmp_path / "token" / "token"
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager"}])
    env = irsa_env(moto.url, token)
    env.update(FERRY_SPEC=spec_to_json(spec), FERRY_STARTUP_DEADLINE="30")

    def mount_later() -> None:
        time.sleep(1.5)
        token.parent.mkdir()
        token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDphcGkifQ.sig")

    mounter = threading.Thread(target=mount_later)
    mounter.start()
    started = time.monotonic()
    try:
        code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")], env)
    finally:
        mounter.join()
    assert code == 0
    assert time.monotonic() - started >= 1.5
    assert (tmp_path / "out" / "db").read_bytes() == b"via irsa, late"


def test_init_without_the_token_fails_with_todays_message_at_the_deadline(moto: Any, tmp_path: Path) -> None:
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager"}])
    env = irsa_env(moto.url, tmp_path / "never" / "token")
    env.update(FERRY_SPEC=spec_to_json(spec), FERRY_STARTUP_DEADLINE="2")
    started = time.monotonic()
    code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")], env)
    assert code == 1
    assert 1.0 <= time.monotonic() - started < 10
    message = (tmp_path / "t").read_text()
    assert "CredentialRetrievalError" in message and "AWS_WEB_IDENTITY_TOKEN_FILE" in message


def test_init_waits_for_the_pod_identity_agent(moto: Any, seed: Seeder, tmp_path: Path, http_stub: StubFactory) -> None:
    seed.secret("db", "via pod identity, late")
    credentials = {
        "AccessKeyId": "ASIAPODIDENTITYTEST1",
        "SecretAccessKey": "pod-identity-secret-key",
        "Token": "pod-identity-session-token",
        "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
    }
    opened = time.monotonic() + 2.0

    def agent_reply(request: RecordedRequest) -> Reply:
        if time.monotonic() < opened:
            return 503, {}, b"starting"
        return 200, {"Content-Type": "application/json"}, json.dumps(credentials).encode()

    agent = http_stub(agent_reply)
    token = tmp_path / "pod-identity-token"
    token.write_text("projected-service-account-token")
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager"}])
    env = fetcher_env(
        moto.url,
        FERRY_SPEC=spec_to_json(spec),
        FERRY_STARTUP_DEADLINE="40",
        AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{agent.url}/v1/credentials",
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token),
        FERRY_AWS_MAX_ATTEMPTS="2",
    )
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")], env)
    assert code == 0, (tmp_path / "t").read_text()
    assert (tmp_path / "out" / "db").read_bytes() == b"via pod identity, late"
    assert len(agent.requests) > 2


def test_init_outlasts_a_burst_of_throttling(tmp_path: Path, http_stub: StubFactory) -> None:
    answered = 0

    def endpoint(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        if answered <= 7:  # more than one call's own retries (FERRY_AWS_MAX_ATTEMPTS=3)
            return aws_json_error(400, "ThrottlingException", "Rate exceeded")
        body = {"Name": "db", "VersionId": "v1", "SecretString": "after the burst"}
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(body).encode()

    stub = http_stub(endpoint)
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager"}])
    code, message = init(stub.url, spec, tmp_path / "out", FERRY_AWS_MAX_ATTEMPTS="3", FERRY_STARTUP_DEADLINE="60")
    assert code == 0, message
    assert (tmp_path / "out" / "db").read_bytes() == b"after the burst"
    assert stub.operations().count("GetSecretValue") == 8


def test_no_call_retries_past_the_start_up_deadline(tmp_path: Path) -> None:
    """An endpoint that accepts and never answers: the last delivery's own calls stop at the deadline too.

    Before, the delivery that began at the deadline kept each call's own retries (5 attempts of a read timeout,
    up to 30 s): a 5 s deadline took 27.5 s. Counted in connections, not seconds, so a busy machine cannot flake it.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def hold() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=hold, daemon=True).start()
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager"}])
    try:
        code, message = init(
            f"http://127.0.0.1:{server.getsockname()[1]}",
            spec,
            tmp_path / "out",
            FERRY_STARTUP_DEADLINE="1",
            FERRY_AWS_READ_TIMEOUT="1",
            FERRY_AWS_MAX_ATTEMPTS="5",
        )
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    assert code == 1 and "ReadTimeoutError" in message
    assert len(accepted) <= 2
