"""ferry.dev/aws-endpoints at admission: the pod's own endpoints, held to the webhook's host allow-list.

A tenant writes the annotation; the fetcher will send the pod's SIGNED requests there. So plain http is
refused unless the webhook allows it, and only hosts in FERRY_ENDPOINT_ALLOWED_HOSTS (AWS's own endpoint names
by default: never the names tenants own under amazonaws.com) are admitted. The cases below are what a
hostile tenant would try.
"""

from __future__ import annotations

from typing import Any

import pytest

from fetcher.contract import spec_from_json, spec_to_json
from fetcher.contract.endpoints import EndpointPolicy, EndpointRequest, check_endpoints
from fetcher.contract.problems import Problem
from tests.support.pods import make_pod
from tests.support.resolving import denied, lookup, resolve_pod, resolved
from webhook.settings import Settings, SettingsError

OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'
VPCE = "https://vpce-0a1b2c3d-4e5f.secretsmanager.us-east-1.vpce.amazonaws.com"


def pod_with(endpoints: str) -> dict[str, Any]:
    return make_pod(
        {"ferry.dev/objects": OBJECTS, "ferry.dev/region": "us-east-1", "ferry.dev/aws-endpoints": endpoints},
        namespace="team-b",
    )


def test_aws_hosts_are_admitted_and_travel_in_the_spec(settings: Settings) -> None:
    value = f"secretsmanager={VPCE}, sts=https://sts-fips.us-east-1.amazonaws.com/"
    result = resolved(resolve_pod(pod_with(value), None, lookup(), settings))
    assert result.spec.endpoints == (("secretsmanager", VPCE), ("sts", "https://sts-fips.us-east-1.amazonaws.com"))
    assert spec_from_json(spec_to_json(result.spec)).endpoints == result.spec.endpoints


def test_the_namespace_annotation_applies_when_the_pod_has_none(settings: Settings) -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-b", "annotations": {"ferry.dev/aws-endpoints": f"secretsmanager={VPCE}"}},
    }
    pod = make_pod({"ferry.dev/objects": OBJECTS, "ferry.dev/region": "us-east-1"}, namespace="team-b")
    assert resolved(resolve_pod(pod, ns, lookup(), settings)).spec.endpoints == (("secretsmanager", VPCE),)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("secretsmanager=https://collector.attacker.example", "not allowed by the webhook"),
        ("secretsmanager=https://amazonaws.com.attacker.example", "not allowed by the webhook"),
        ("ssm=http://ssm.us-east-1.amazonaws.com", "plain http is refused"),
        ("sts=https://user:pw@sts.us-east-1.amazonaws.com", "user name or password"),
        ("sts=https://sts.us-east-1.amazonaws.com/redirect?to=x", "without a path"),
        ("kms=https://kms.us-east-1.amazonaws.com", "is not one of"),
        ("secretsmanager=ftp://secretsmanager.us-east-1.amazonaws.com", "must start with https://"),
        ("secretsmanager", "is not service=URL"),
        ("x" * 5000, "longer than 2048"),
    ],
)
def test_what_a_tenant_may_not_point_the_pods_credentials_at(settings: Settings, value: str, reason: str) -> None:
    denial = denied(resolve_pod(pod_with(value), None, lookup(), settings))
    assert "ferry.dev/aws-endpoints" in denial.message and reason in denial.message
    assert len(denial.message) < 1000


@pytest.mark.parametrize(
    "value",
    [
        # Names under amazonaws.com that a tenant can own, each of which receives every header of a request:
        "secretsmanager=https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",  # its own API Gateway
        "sts=https://collector-1234567890.us-east-1.elb.amazonaws.com",  # its own load balancer
        "sts=https://ec2-203-0-113-5.compute-1.amazonaws.com",  # its own instance
        "sts=https://sts.s3.amazonaws.com",  # a bucket named like the service
        "sts=https://sts.us-east-1.s3.amazonaws.com",
        "ssm=https://ssm.s3-website-us-east-1.amazonaws.com",
        "secretsmanager=https://vpce-0a1b.vpce-svc-0123456789abcdef0.us-east-1.vpce.amazonaws.com",  # its own service
        "ssm=https://secretsmanager.us-east-1.amazonaws.com",  # another service's name
    ],
)
def test_only_aws_own_service_names_pass_the_default_list(settings: Settings, value: str) -> None:
    """The STS endpoint receives the pod's IRSA token, the others its signed requests: `*.amazonaws.com` is too wide."""
    denial = denied(resolve_pod(pod_with(value), None, lookup(), settings))
    assert "not allowed by the webhook" in denial.message


@pytest.mark.parametrize(
    "value",
    [
        "sts=https://sts.amazonaws.com",
        "sts=https://sts.us-gov-west-1.amazonaws.com",
        "sts=https://sts-fips.us-east-2.amazonaws.com",
        "ssm=https://ssm-fips.us-east-1.api.aws",
        "ssm=https://ssm.eu-west-1.api.aws",
        "secretsmanager=https://secretsmanager.cn-north-1.amazonaws.com.cn",
        "secretsmanager=https://SecretsManager.US-EAST-1.amazonaws.com:443/",
        f"secretsmanager={VPCE}",
        "secretsmanager=https://vpce-0a1b2c3d-4e5f-us-east-1a.secretsmanager.us-east-1.vpce.amazonaws.com",
        "sts=https://vpce-0a1b2c3d-4e5f.sts.cn-northwest-1.vpce.amazonaws.com.cn",
        "ssm=https://ssm.us-isob-east-1.sc2s.sgov.gov",
        "sts=https://sts.eusc-de-east-1.amazonaws.eu",
    ],
)
def test_aws_own_service_names_pass_the_default_list(settings: Settings, value: str) -> None:
    resolved(resolve_pod(pod_with(value), None, lookup(), settings))


@pytest.mark.parametrize(
    "url", ["https://sts.amazon\taws.com", "https://sts.amazonaws.com\n", " https://sts.amazonaws.com"]
)
def test_a_url_with_spaces_or_control_characters_is_refused(url: str) -> None:
    """urlsplit silently drops tabs and line breaks: the text checked would not be the text kept."""
    problems: list[Problem] = []
    assert check_endpoints(EndpointRequest({"sts": url}), "ferry.dev/aws-endpoints", problems) == ()
    assert "space or control character" in problems[0].message


def test_the_webhook_widens_or_narrows_the_allow_list() -> None:
    lab = Settings.from_env(
        {"FERRY_ENDPOINT_ALLOWED_HOSTS": "127.0.0.1,*.corp.internal", "FERRY_ENDPOINT_ALLOW_HTTP": "true"}
    )
    assert lab.endpoint_policy == EndpointPolicy(allowed_hosts=("127.0.0.1", "*.corp.internal"), allow_http=True)
    ok = resolve_pod(pod_with("ssm=http://127.0.0.1:5000,sts=https://sts.corp.internal"), None, lookup(), lab)
    assert resolved(ok).spec.endpoints[0] == ("ssm", "http://127.0.0.1:5000")
    denial = denied(resolve_pod(pod_with(f"secretsmanager={VPCE}"), None, lookup(), lab))
    assert "FERRY_ENDPOINT_ALLOWED_HOSTS" in denial.message


@pytest.mark.parametrize(
    "env",
    [
        {"FERRY_ENDPOINT_ALLOWED_HOSTS": "https://x.example"},
        {"FERRY_ENDPOINT_ALLOWED_HOSTS": "a b"},
        {"FERRY_ENDPOINT_ALLOW_HTTP": "yes"},
    ],
)
def test_bad_settings_stop_the_webhook_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)


def test_a_gcp_pod_naming_aws_endpoints_is_told_they_do_not_apply(settings: Settings) -> None:
    pod = make_pod(
        {
            "ferry.dev/provider": "gcp",
            "ferry.dev/objects": "- resourceName: projects/p/secrets/db/versions/latest\n  path: db\n",
            "ferry.dev/aws-endpoints": f"secretsmanager={VPCE}",
        },
        namespace="team-b",
    )
    denial = denied(resolve_pod(pod, None, lookup(), settings))
    assert "ferry.dev/aws-endpoints: names AWS endpoints, but the objects are GCP's" in denial.message


def test_a_gcp_pod_in_a_namespace_with_aws_endpoints_is_admitted(settings: Settings) -> None:
    """The namespace's endpoints are for its AWS pods: a GCP pod cannot remove them, so they do not deny it."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-b", "annotations": {"ferry.dev/aws-endpoints": f"secretsmanager={VPCE}"}},
    }
    pod = make_pod(
        {
            "ferry.dev/provider": "gcp",
            "ferry.dev/objects": "- resourceName: projects/my-project/secrets/db/versions/latest\n  path: db\n",
        },
        namespace="team-b",
    )
    gcp_settings = Settings.from_env(
        {"FERRY_GCP_PROJECT": "my-project", "FERRY_GCP_LOCATION": "us-central1", "FERRY_GCP_CLUSTER": "prod"}
    )
    assert resolved(resolve_pod(pod, ns, lookup(), gcp_settings)).spec.endpoints == ()


def test_aws_names_and_the_administrators_own_together() -> None:
    """`aws` in FERRY_ENDPOINT_ALLOWED_HOSTS keeps AWS's own names beside the cluster's own patterns."""
    both = Settings.from_env({"FERRY_ENDPOINT_ALLOWED_HOSTS": "aws, *.vpce.corp.internal"})
    value = f"secretsmanager={VPCE},sts=https://sts.vpce.corp.internal"
    assert len(resolved(resolve_pod(pod_with(value), None, lookup(), both)).spec.endpoints) == 2
    tenant_owned = "sts=https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    denial = denied(resolve_pod(pod_with(tenant_owned), None, lookup(), both))
    assert "AWS's own sts endpoint names, *.vpce.corp.internal" in denial.message
