"""The signing key is derived once per day, region, service and secret key: the cache must never sign stale.

A sidecar signs for weeks in one process, across UTC midnights and credential renewals; each signature
is checked against botocore's signer, which derives the key afresh every time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from fetcher.sigv4 import Credentials, sign, signing_key

HOST = "secretsmanager.us-east-1.amazonaws.com"
BODY = b'{"SecretId":"app/db"}'
HEADERS = {"content-type": "application/x-amz-json-1.1", "x-amz-target": "secretsmanager.DescribeSecret"}


def ours(credentials: Credentials, now: datetime) -> str:
    signed = sign(
        method="POST",
        host=HOST,
        path="/",
        headers=HEADERS,
        body=BODY,
        credentials=credentials,
        region="us-east-1",
        service="secretsmanager",
        now=now,
    )
    return signed["authorization"]


def botocores(credentials: Credentials, now: datetime) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    request = AWSRequest(method="POST", url=f"https://{HOST}/", data=BODY, headers=dict(HEADERS))
    request.context["timestamp"] = stamp
    request.headers["X-Amz-Date"] = stamp
    signer = SigV4Auth(BotoCredentials(credentials.access_key, credentials.secret_key), "secretsmanager", "us-east-1")
    return str(signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request))


def test_the_cached_key_rolls_over_at_utc_midnight() -> None:
    credentials = Credentials("AKIDEXAMPLE", "first-secret")
    before = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC)
    after = datetime(2026, 12, 7, 0, 0, 0, tzinfo=UTC)
    ours(credentials, before)  # the cache now holds the 6 December key
    assert ours(credentials, after).endswith(f"Signature={botocores(credentials, after)}")
    assert "/20261207/us-east-1/secretsmanager/aws4_request" in ours(credentials, after)
    assert ours(credentials, before).endswith(f"Signature={botocores(credentials, before)}")


def test_the_cached_key_follows_renewed_credentials() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    old, renewed = Credentials("ASIAOLD", "old-secret"), Credentials("ASIANEW", "renewed-secret")
    ours(old, now)
    assert ours(renewed, now).endswith(f"Signature={botocores(renewed, now)}")
    assert signing_key("old-secret", "20261206", "us-east-1", "secretsmanager") != signing_key(
        "renewed-secret", "20261206", "us-east-1", "secretsmanager"
    )


def test_a_local_time_signs_with_its_utc_day() -> None:
    from datetime import timedelta, timezone

    credentials = Credentials("AKIDEXAMPLE", "secret")
    # 01:30 on 7 December in UTC+2 is 23:30 on 6 December in UTC.
    local = datetime(2026, 12, 7, 1, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    assert "/20261206/" in ours(credentials, local)
    assert ours(credentials, local).endswith(f"Signature={botocores(credentials, local.astimezone(UTC))}")
