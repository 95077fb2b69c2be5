"""A pod's own AWS endpoints (Secrets Manager, SSM, STS), checked against the webhook's allow-list.

The fetcher signs every request with the pod's credentials, and a host that is not AWS could replay the
signature to AWS for minutes, so a tenant must not point a pod at an arbitrary host. Rules:
docs/configuration.md ("Endpoints per pod").
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fetcher.contract.problems import Problem, kind_of, quote

ENDPOINT_SERVICES = ("secretsmanager", "ssm", "sts")
MAX_ENDPOINTS_CHARS = 2048
MAX_URL_CHARS = 512
# The allow-list's default, and a keyword an administrator may list beside their own patterns: AWS's own
# endpoint names for the service named, and nothing else under AWS's domains. A pattern like *.amazonaws.com
# would admit names tenants own (API Gateway, load balancers, instances, S3 buckets), each of which sees every
# header of a request sent to it.
AWS_SERVICE_NAMES = "aws"
DEFAULT_ALLOWED_HOSTS = (AWS_SERVICE_NAMES,)
# The DNS suffixes of AWS's partitions (standard and dual-stack), as fetcher.awsendpoints names them.
_AWS_SUFFIXES = (
    "amazonaws.com",
    "amazonaws.com.cn",
    "api.aws",
    "api.amazonwebservices.com.cn",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
    "amazonaws.eu",
    "api.amazonwebservices.eu",
)
# [vpce-ID[-ZONE].]SERVICE[-fips][.REGION][.vpce].SUFFIX: the standard, FIPS, dual-stack, global (STS) and
# interface VPC endpoint names. The region is one label shaped like a region, so no bucket or host fits.
_AWS_SERVICE_HOST_RE = re.compile(
    r"(?:vpce-[a-z0-9-]{1,80}\.)?(?P<service>[a-z]+)(?:-fips)?"
    r"(?:\.[a-z]{2,4}(?:-[a-z]{1,10}){1,3}-[0-9]{1,2})?(?:\.vpce)?"
    rf"\.(?:{'|'.join(re.escape(suffix) for suffix in _AWS_SUFFIXES)})"
)
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


@dataclass(frozen=True)
class EndpointPolicy:
    """What the webhook lets a pod name: hosts (shell patterns, "*" for any, "aws" for AWS's own) and http or not."""

    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    allow_http: bool = False


# The fetcher re-reads a spec the webhook already checked: only the shape is checked again.
ANY_ENDPOINT = EndpointPolicy(allowed_hosts=("*",), allow_http=True)


@dataclass(frozen=True)
class EndpointRequest:
    """What a pod asked for (annotation text or the spec's mapping), and the policy that judges it."""

    raw: str | Mapping[str, Any] | None
    policy: EndpointPolicy = EndpointPolicy()
    # From the namespace's annotation, not the pod's: meant for the namespace's AWS pods.
    from_namespace: bool = False


def endpoints_for(
    request: EndpointRequest | None, name: str, gcp: bool, problems: list[Problem]
) -> tuple[tuple[str, str], ...]:
    """The spec's endpoints; a GCP pod's own are refused, and a namespace's (for its AWS pods) do not apply to it."""
    if not gcp:
        return check_endpoints(request, name, problems)
    if request is not None and request.raw not in (None, "") and not request.from_namespace:
        problems.append(Problem(name, "names AWS endpoints, but the objects are GCP's; remove it"))
    return ()


def check_endpoints(request: EndpointRequest | None, name: str, problems: list[Problem]) -> tuple[tuple[str, str], ...]:
    """ "secretsmanager=https://...,sts=https://..." (or a mapping) -> sorted (service, URL) pairs."""
    raw = request.raw if request is not None else None
    if request is None or raw is None or raw == "":
        return ()
    policy = request.policy
    pairs: list[tuple[str, Any]]
    if isinstance(raw, str):
        if len(raw) > MAX_ENDPOINTS_CHARS:
            problems.append(Problem(name, f"is longer than {MAX_ENDPOINTS_CHARS} characters"))
            return ()
        pairs = []
        for item in raw.split(","):
            service, sep, url = item.strip().partition("=")
            if not sep:
                problems.append(Problem(name, f"{quote(item.strip()[:60])} is not service=URL (e.g. sts=https://...)"))
                return ()
            pairs.append((service.strip(), url.strip()))
    elif isinstance(raw, Mapping):
        pairs = [(str(key), value) for key, value in raw.items()]
    else:
        problems.append(Problem(name, f"must be service=URL pairs, got {kind_of(raw)}"))
        return ()
    chosen: dict[str, str] = {}
    for service, url in pairs:
        if service not in ENDPOINT_SERVICES:
            problems.append(Problem(name, f"{quote(service[:40])} is not one of {', '.join(ENDPOINT_SERVICES)}"))
            continue
        if service in chosen:
            problems.append(Problem(name, f"names {service} twice; keep one"))
            continue
        reason = url_problem(url, policy, service)
        if reason:
            problems.append(Problem(f"{name}: {service}", reason))
            continue
        chosen[service] = str(url).rstrip("/")
    return tuple(sorted(chosen.items()))


def url_problem(url: Any, policy: EndpointPolicy, service: str) -> str | None:
    """None when the fetcher may send the pod's signed `service` requests to `url`; otherwise why not, and the fix."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return f"must be a URL of at most {MAX_URL_CHARS} characters"
    if any(char.isspace() or not char.isprintable() for char in url):
        # urlsplit drops tabs and line breaks silently: the host checked would not be the text kept.
        return "holds a space or control character; write the URL alone"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{quote(url[:80])} is not a valid URL"
    if parts.scheme not in ("https", "http"):
        return f"{quote(url[:80])} must start with https://"
    if parts.scheme == "http" and not policy.allow_http:
        return "plain http is refused (requests carry the pod's signed credentials); use https"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        return "must be scheme://host[:port] only, without a path, query or fragment"
    host = (parts.hostname or "").lower()
    if not host or not (_HOST_RE.match(host) or _is_ip(host)):
        return f"{quote(url[:80])} has no valid host name"
    if port is not None and not 0 < port < 65536:
        return "has an invalid port"
    if not any(_host_allowed(host, pattern, service) for pattern in policy.allowed_hosts):
        names = (
            f"AWS's own {service} endpoint names" if item == AWS_SERVICE_NAMES else item
            for item in policy.allowed_hosts
        )
        shown = ", ".join(list(names)[:4]) + (", ..." if len(policy.allowed_hosts) > 4 else "")
        return (
            f"the host {quote(host[:80])} is not allowed by the webhook (allowed: {shown}); ask the cluster "
            "administrator to add it to FERRY_ENDPOINT_ALLOWED_HOSTS"
        )
    return None


def _host_allowed(host: str, pattern: str, service: str) -> bool:
    if pattern == AWS_SERVICE_NAMES:
        match = _AWS_SERVICE_HOST_RE.fullmatch(host)
        return match is not None and match.group("service") == service
    return fnmatch.fnmatchcase(host, pattern)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def endpoints_to_wire(endpoints: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {"endpoints": dict(endpoints)} if endpoints else {}


ALLOWED_HOSTS_ENV_VAR = "FERRY_ENDPOINT_ALLOWED_HOSTS"
ALLOW_HTTP_ENV_VAR = "FERRY_ENDPOINT_ALLOW_HTTP"
_PATTERN_RE = re.compile(r"^(\*|(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)\Z")


def policy_from_settings(hosts: str | None, allow_http: str | None) -> EndpointPolicy:
    """The webhook's policy from its env vars; ValueError names the variable and the fix."""
    patterns: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    if hosts and hosts.strip():
        patterns = tuple(item.strip().lower() for item in hosts.split(",") if item.strip())
        bad = [item for item in patterns if not _PATTERN_RE.match(item)]
        if bad or len(patterns) > 64:
            raise ValueError(
                f"{ALLOWED_HOSTS_ENV_VAR}: {quote(bad[0][:60]) if bad else 'more than 64 patterns'} is not a host, "
                "*.domain or *; separate patterns with commas"
            )
    flag = (allow_http or "false").strip().lower()
    if flag not in ("true", "false"):
        raise ValueError(f"{ALLOW_HTTP_ENV_VAR} must be true or false, got {quote(flag[:20])}")
    return EndpointPolicy(allowed_hosts=patterns, allow_http=flag == "true")
