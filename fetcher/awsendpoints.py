"""Which URL answers for an AWS service in a region: partitions, FIPS, dual-stack and the overrides.

Without an SDK the fetcher must name endpoints itself; tests compare the rule with botocore's resolver for
every known region. The order of the overrides: docs/aws-client.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fetcher.contract.regions import partition_of

# partition -> (DNS suffix, dual-stack DNS suffix or None where the partition has none)
PARTITION_SUFFIXES: dict[str, tuple[str, str | None]] = {
    "aws": ("amazonaws.com", "api.aws"),
    "aws-cn": ("amazonaws.com.cn", "api.amazonwebservices.com.cn"),
    "aws-us-gov": ("amazonaws.com", "api.aws"),
    "aws-iso": ("c2s.ic.gov", "api.aws"),
    "aws-iso-b": ("sc2s.sgov.gov", "api.aws"),
    "aws-iso-e": ("cloud.adc-e.uk", None),
    "aws-iso-f": ("csp.hci.ic.gov", None),
    "aws-eusc": ("amazonaws.eu", "api.amazonwebservices.eu"),
}
# In GovCloud, these services' standard names already are their FIPS endpoints.
FIPS_BY_DEFAULT = {("aws-us-gov", "ssm"), ("aws-us-gov", "sts")}
# The suffix of AWS_ENDPOINT_URL_<...>, as the AWS SDKs name each service.
SERVICE_ENV_SUFFIX = {"secretsmanager": "SECRETS_MANAGER", "ssm": "SSM", "sts": "STS"}
FERRY_OVERRIDE_PREFIX = "FERRY_ENDPOINT_URL_"


class EndpointError(Exception):
    """No endpoint exists for this combination (e.g. dual-stack in a partition without it)."""

    code = "EndpointVariantError"


@dataclass(frozen=True)
class EndpointRules:
    fips: bool = False
    dualstack: bool = False
    # region -> URL (Ferry's per-region override)
    region_overrides: Mapping[str, str] | None = None
    # service -> URL (AWS_ENDPOINT_URL_<SERVICE>), and "" -> URL (AWS_ENDPOINT_URL)
    configured: Mapping[str, str] | None = None
    # (service, region) -> URL: the pod's own endpoints (ferry.dev/aws-endpoints), first of all.
    pinned: Mapping[tuple[str, str], str] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EndpointRules:
        overrides = {
            key[len(FERRY_OVERRIDE_PREFIX) :].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith(FERRY_OVERRIDE_PREFIX) and value
        }
        configured: dict[str, str] = {}
        if not _true(environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")):
            if environ.get("AWS_ENDPOINT_URL"):
                configured[""] = environ["AWS_ENDPOINT_URL"]
            for service, suffix in SERVICE_ENV_SUFFIX.items():
                if environ.get(f"AWS_ENDPOINT_URL_{suffix}"):
                    configured[service] = environ[f"AWS_ENDPOINT_URL_{suffix}"]
        return cls(
            fips=_true(environ.get("AWS_USE_FIPS_ENDPOINT")),
            dualstack=_true(environ.get("AWS_USE_DUALSTACK_ENDPOINT")),
            region_overrides=overrides,
            configured=configured,
        )

    def url(self, service: str, region: str) -> str:
        """The endpoint URL for `service` in `region` (no trailing slash)."""
        pinned = (self.pinned or {}).get((service, region))
        if pinned:
            return pinned.rstrip("/")
        override = (self.region_overrides or {}).get(region) if service != "sts" else None
        if override:  # Ferry's override points one region's secrets elsewhere; STS stays where AWS says
            return override.rstrip("/")
        configured = self.configured or {}
        chosen = configured.get(service) or configured.get("")
        if chosen:
            return chosen.rstrip("/")
        return standard_url(service, region, fips=self.fips, dualstack=self.dualstack)


def standard_url(service: str, region: str, *, fips: bool = False, dualstack: bool = False) -> str:
    partition = partition_of(region) or "aws"
    suffix, dualstack_suffix = PARTITION_SUFFIXES.get(partition, PARTITION_SUFFIXES["aws"])
    if dualstack:
        if dualstack_suffix is None:
            raise EndpointError(
                f"the {partition} partition has no dual-stack endpoints; unset AWS_USE_DUALSTACK_ENDPOINT"
            )
        suffix = dualstack_suffix
    name = service
    if fips and not (not dualstack and (partition, service) in FIPS_BY_DEFAULT):
        name += "-fips"
    return f"https://{name}.{region}.{suffix}"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"
