"""The pod's own endpoints (ferry.dev/aws-endpoints) win over the container's AWS_ENDPOINT_URL, per service.

`init` runs with AWS_ENDPOINT_URL pointing at a loopback stub that must never be asked; the spec pins
Secrets Manager and SSM to moto and STS to a loopback capture that forwards to moto.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fetcher.__main__ import main
from fetcher.contract import spec_to_json
from fetcher.contract.endpoints import EndpointPolicy, EndpointRequest
from tests.support.aws import (
    LocalHttpStub,
    RecordedRequest,
    Reply,
    Seeder,
    aws_json_error,
    fetcher_env,
    forwarding_sts,
    make_spec,
    seed_in_account,
)

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]
ROLE = "arn:aws:iam::222233334444:role/shop-reader"
LOOPBACK = EndpointPolicy(allowed_hosts=("127.0.0.1",), allow_http=True)


def test_each_service_goes_to_the_pods_own_endpoint(
    moto: Any, seed: Seeder, tmp_path: Path, http_stub: StubFactory
) -> None:
    seed.secret("db", "through the pinned endpoint")
    seed.parameter("/app/url", "https://app")
    seed_in_account(moto.url, ROLE, "shared", "through the pinned STS")
    elsewhere = http_stub(lambda request: aws_json_error(500, "InternalFailure", "wrong endpoint"))
    sts = http_stub(forwarding_sts(moto.url))
    spec = make_spec(
        [
            {"objectName": "db", "objectType": "secretsmanager"},
            {"objectName": "/app/url", "objectType": "ssmparameter"},
            {"objectName": "shared", "objectType": "secretsmanager", "roleArn": ROLE},
        ],
        endpoints=EndpointRequest(f"secretsmanager={moto.url},ssm={moto.url},sts={sts.url}", LOOPBACK),
    )
    env = fetcher_env(elsewhere.url, FERRY_SPEC=spec_to_json(spec), FERRY_STARTUP_DEADLINE="0")
    code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(tmp_path / "t")], env)
    assert code == 0, (tmp_path / "t").read_text()
    assert (tmp_path / "out" / "db").read_bytes() == b"through the pinned endpoint"
    assert (tmp_path / "out" / "_app_url").read_bytes() == b"https://app"
    assert (tmp_path / "out" / "shared").read_bytes() == b"through the pinned STS"
    assert elsewhere.requests == []
    assert [request.body.decode().split("&")[0] for request in sts.requests] == ["Action=AssumeRole"]
