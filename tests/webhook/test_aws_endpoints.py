"""ferry.dev/aws-endpoints at admission: the pod's own endpoints, held to the webhook's host allow-list.

A tenant writes the annotation; the fetcher will send the pod's SIGNED requests there. So plain http is
refused unless the webhook allows it, and only hosts in FERRY_ENDPOINT_ALLOWED_HOSTS (AWS's own domains
by default) are admitted. The cases below are what a hostile tenant would try.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fetcher.spec import spec_from_json, spec_to_json
from fetcher.spec.endpoints import EndpointPolicy
from tests.support.resolving import denied, lookup, resolve_pod, resolved
from webhook.settings import Settings, SettingsError

PodFactory = Callable[..., dict[str, Any]]
OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'
VPCE = "https://vpce-0a1b2c3d-4e5f.secretsmanager.us-east-1.vpce.amazonaws.com"


def pod_with(pod_factory: PodFactory, endpoints: str) -> dict[str, Any]:
    return pod_factory(
        {"ferry.dev/objects": OBJECTS, "ferry.dev/region": "us-east-1", "ferry.dev/aws-endpoints": endpoints}
    )


def test_aws_hosts_are_admitted_and_travel_in_the_spec(pod_factory: PodFactory, settings: Settings) -> None:
    value = f"secretsmanager={VPCE}, sts=https://sts-fips.us-east-1.amazonaws.com/"
    result = resolved(resolve_pod(pod_with(pod_factory, value), None, lookup(), settings))
    assert result.spec.endpoints == (("secretsmanager", VPCE), ("sts", "https://sts-fips.us-east-1.amazonaws.com"))
    assert spec_from_json(spec_to_json(result.spec)).endpoints == result.spec.endpoints


def test_the_namespace_annotation_applies_when_the_pod_has_none(pod_factory: PodFactory, settings: Settings) -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-b", "annotations": {"ferry.dev/aws-endpoints": f"secretsmanager={VPCE}"}},
    }
    pod = pod_factory({"ferry.dev/objects": OBJECTS, "ferry.dev/region": "us-east-1"})
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
def test_what_a_tenant_may_not_point_the_pods_credentials_at(
    pod_factory: PodFactory, settings: Settings, value: str, reason: str
) -> None:
    denial = denied(resolve_pod(pod_with(pod_factory, value), None, lookup(), settings))
    assert "ferry.dev/aws-endpoints" in denial.message and reason in denial.message
    assert len(denial.message) < 1000


def test_the_webhook_widens_or_narrows_the_allow_list(pod_factory: PodFactory) -> None:
    lab = Settings.from_env(
        {"FERRY_ENDPOINT_ALLOWED_HOSTS": "127.0.0.1,*.corp.internal", "FERRY_ENDPOINT_ALLOW_HTTP": "true"}
    )
    assert lab.endpoint_policy == EndpointPolicy(allowed_hosts=("127.0.0.1", "*.corp.internal"), allow_http=True)
    ok = resolve_pod(
        pod_with(pod_factory, "ssm=http://127.0.0.1:5000,sts=https://sts.corp.internal"), None, lookup(), lab
    )
    assert resolved(ok).spec.endpoints[0] == ("ssm", "http://127.0.0.1:5000")
    denial = denied(resolve_pod(pod_with(pod_factory, f"secretsmanager={VPCE}"), None, lookup(), lab))
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


def test_a_gcp_pod_naming_aws_endpoints_is_told_they_do_not_apply(pod_factory: PodFactory, settings: Settings) -> None:
    pod = pod_factory(
        {
            "ferry.dev/provider": "gcp",
            "ferry.dev/objects": "- resourceName: projects/p/secrets/db/versions/latest\n  path: db\n",
            "ferry.dev/aws-endpoints": f"secretsmanager={VPCE}",
        }
    )
    denial = denied(resolve_pod(pod, None, lookup(), settings))
    assert "ferry.dev/aws-endpoints: names AWS endpoints, but the objects are GCP's" in denial.message
