"""The webhook's configuration, read once from environment variables into one frozen `Settings`.

A typo in a quantity or a region must stop the webhook at start-up with a message naming the variable, not deny
every pod later, and the manifests, the docs and the code must agree on one set of names. Nothing is read at
import time: `Settings.from_env(os.environ)` takes the mapping, so tests build their own `Settings`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

from fetcher.contract import DEFAULT_MIN_REFRESH_SECONDS, parse_duration, quote
from fetcher.contract.endpoints import ALLOW_HTTP_ENV_VAR, ALLOWED_HOSTS_ENV_VAR, EndpointPolicy, policy_from_settings
from webhook.quantity import parse_quantity

NativeSidecars = Literal["auto", "true", "false"]
FargateSizing = Literal["auto", "off"]
OversizeAction = Literal["warn", "deny"]
Autopilot = Literal["off", "bursting", "no-bursting"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

# Never injected, whatever FERRY_EXCLUDED_NAMESPACES says: the control plane's
# own pods must not depend on Ferry being up.
ALWAYS_EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-public"})

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


_GCP_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]\Z")
_GCP_POOL_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\.svc\.id\.goog\Z")
_GCP_PROVIDER_RE = re.compile(r"^https://[a-z.]+\.googleapis\.com/[A-Za-z0-9/_.-]{1,200}\Z")


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


class SettingsError(ValueError):
    """An env var holds a value the webhook cannot run with."""


@dataclass(frozen=True)
class Settings:
    """Everything the webhook is configured with. Defaults match the manifests."""

    namespace: str = "ferry-system"
    service_name: str = "ferry-webhook"
    webhook_config_name: str = "ferry"
    tls_secret_name: str = "ferry-webhook-tls"
    # Both set: serve this pair (cert-manager); both unset: self-managed certs.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    fetcher_image: str = "ghcr.io/ferry-dev/ferry-fetcher:0.1.0"
    fetcher_pull_policy: PullPolicy = "IfNotPresent"
    # From bench/lean_fetcher.py (docs/benchmarks.md, "Default requests and limits"): sidecar steady
    # RSS 24 MB, init peak 25 MB, the volume's files (<= 16Mi) charged on top; ~4 ms CPU per refresh.
    fetcher_cpu_request: str = "10m"
    fetcher_memory_request: str = "32Mi"
    fetcher_cpu_limit: str = "500m"
    fetcher_memory_limit: str = "64Mi"
    # The least Ferry lowers its requests to when fitting a pod into its Fargate size (webhook.policy.sizing);
    # None for memory: the memory request itself (memory is never lowered unless this is set).
    fetcher_cpu_request_floor: str = "0"
    fetcher_memory_request_floor: str | None = None
    # auto: pods with schedulerName fargate-scheduler are sized for Fargate; off: never.
    fargate_sizing: FargateSizing = "auto"
    # When Ferry's containers cannot fit the pod's Fargate size even at their floors.
    fargate_oversize: OversizeAction = "warn"
    # GKE Autopilot: Ferry's containers are sized so that Autopilot never adjusts them.
    autopilot: Autopilot = "off"
    # Ferry's containers' ephemeral-storage request on Autopilot (else Autopilot's default applies); their
    # logs are all they keep on disk, and the kubelet rotates them well below this.
    autopilot_ephemeral_storage: str = "100Mi"
    # Last fallback for the AWS region (after pod, SecretProviderClass, namespace).
    default_region: str | None = None
    volume_size_limit: str = "16Mi"
    min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS
    # Default of ferry.dev/sidecar-unhealthy-after: the sidecar's liveness probe fails after this long
    # of refreshes failing without a break (0: no probe).
    sidecar_unhealthy_after_seconds: float = 600.0
    native_sidecars: NativeSidecars = "auto"
    # uid of the injected containers when neither the pod nor its containers set one.
    default_user_id: int = 65532
    excluded_namespaces: frozenset[str] = field(default_factory=lambda: ALWAYS_EXCLUDED_NAMESPACES)
    max_request_bytes: int = 3 * 1024 * 1024
    log_level: str = "info"
    # The plain-HTTP metrics listener's port; 0: no listener.
    metrics_port: int = 9090
    # Which hosts ferry.dev/aws-endpoints may name, and whether http is allowed (fetcher.contract.endpoints).
    endpoint_policy: EndpointPolicy = field(default_factory=EndpointPolicy)
    # FERRY_STARTUP_DEADLINE for the init container (seconds); None: the fetcher's default (fetcher/startup.py).
    startup_deadline_seconds: float | None = None
    # GKE Workload Identity for provider: gcp (namespace annotations override both): PROJECT.svc.id.goog, and
    # the cluster as that pool knows it. From FERRY_GCP_PROJECT/_LOCATION/_CLUSTER, or set in full.
    gcp_workload_pool: str | None = None
    gcp_identity_provider: str | None = None
    # Where the metrics listener binds (loopback unless the chart exposes it to a scraper).
    metrics_host: str = "127.0.0.1"
    # Sources the metrics listener admits, as CIDRs; empty: any that reaches it.
    metrics_allowed_sources: tuple[str, ...] = ()
    # The API server's source addresses, as CIDRs: their connections are the last closed to make room.
    api_server_addresses: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse FERRY_* variables; raise SettingsError naming the first bad one."""
        reader = _Reader(environ)
        cert_file = reader.optional("FERRY_TLS_CERT_FILE")
        key_file = reader.optional("FERRY_TLS_KEY_FILE")
        if (cert_file is None) != (key_file is None):
            raise SettingsError(
                "FERRY_TLS_CERT_FILE and FERRY_TLS_KEY_FILE must be set together (a cert-manager pair) "
                "or both left unset (the webhook then manages its own certificate)"
            )
        settings = cls(
            namespace=reader.matching("FERRY_NAMESPACE", cls.namespace, _DNS_LABEL_RE, "a namespace name"),
            service_name=reader.matching("FERRY_SERVICE_NAME", cls.service_name, _DNS_LABEL_RE, "a Service name"),
            webhook_config_name=reader.matching(
                "FERRY_WEBHOOK_CONFIG_NAME",
                cls.webhook_config_name,
                _DNS_SUBDOMAIN_RE,
                "a MutatingWebhookConfiguration name",
            ),
            tls_secret_name=reader.matching(
                "FERRY_TLS_SECRET_NAME", cls.tls_secret_name, _DNS_SUBDOMAIN_RE, "a Secret name"
            ),
            tls_cert_file=cert_file,
            tls_key_file=key_file,
            fetcher_image=reader.image("FERRY_FETCHER_IMAGE", cls.fetcher_image),
            fetcher_pull_policy=reader.choice(
                "FERRY_FETCHER_PULL_POLICY", cls.fetcher_pull_policy, ("Always", "IfNotPresent", "Never")
            ),
            fetcher_cpu_request=reader.quantity("FERRY_FETCHER_CPU_REQUEST", cls.fetcher_cpu_request),
            fetcher_memory_request=reader.quantity("FERRY_FETCHER_MEMORY_REQUEST", cls.fetcher_memory_request),
            fetcher_cpu_limit=reader.quantity("FERRY_FETCHER_CPU_LIMIT", cls.fetcher_cpu_limit),
            fetcher_memory_limit=reader.quantity("FERRY_FETCHER_MEMORY_LIMIT", cls.fetcher_memory_limit),
            fetcher_cpu_request_floor=reader.quantity(
                "FERRY_FETCHER_CPU_REQUEST_FLOOR", cls.fetcher_cpu_request_floor, zero_allowed=True
            ),
            fetcher_memory_request_floor=reader.optional_quantity("FERRY_FETCHER_MEMORY_REQUEST_FLOOR"),
            fargate_sizing=reader.choice("FERRY_FARGATE_SIZING", cls.fargate_sizing, ("auto", "off")),
            fargate_oversize=reader.choice("FERRY_FARGATE_OVERSIZE", cls.fargate_oversize, ("warn", "deny")),
            autopilot=reader.choice("FERRY_AUTOPILOT", cls.autopilot, ("off", "bursting", "no-bursting")),
            autopilot_ephemeral_storage=reader.quantity(
                "FERRY_AUTOPILOT_EPHEMERAL_STORAGE", cls.autopilot_ephemeral_storage
            ),
            default_region=reader.optional_matching("FERRY_DEFAULT_REGION", _REGION_RE, "an AWS region like us-east-1"),
            volume_size_limit=reader.quantity("FERRY_VOLUME_SIZE_LIMIT", cls.volume_size_limit),
            min_refresh_seconds=reader.duration("FERRY_MIN_REFRESH_INTERVAL", "10s"),
            sidecar_unhealthy_after_seconds=reader.duration("FERRY_SIDECAR_UNHEALTHY_AFTER", "10m"),
            native_sidecars=reader.choice("FERRY_NATIVE_SIDECARS", cls.native_sidecars, ("auto", "true", "false")),
            default_user_id=reader.user_id("FERRY_DEFAULT_USER_ID", cls.default_user_id),
            excluded_namespaces=reader.namespaces("FERRY_EXCLUDED_NAMESPACES", "kube-system,kube-public"),
            max_request_bytes=reader.positive_int("FERRY_MAX_REQUEST_BYTES", cls.max_request_bytes),
            log_level=reader.choice("FERRY_LOG_LEVEL", cls.log_level, _LOG_LEVELS),
            metrics_port=reader.port("FERRY_METRICS_PORT", cls.metrics_port),
            endpoint_policy=_endpoint_policy(environ),
            startup_deadline_seconds=(
                reader.duration("FERRY_STARTUP_DEADLINE", "0") if environ.get("FERRY_STARTUP_DEADLINE") else None
            ),
            **_gcp_settings(reader),
            metrics_host=reader.address("FERRY_METRICS_HOST", cls.metrics_host),
            metrics_allowed_sources=reader.networks("FERRY_METRICS_ALLOWED_SOURCES"),
            api_server_addresses=reader.networks("FERRY_API_SERVER_ADDRESSES"),
        )
        for kind in ("CPU", "MEMORY"):
            request, limit = f"FERRY_FETCHER_{kind}_REQUEST", f"FERRY_FETCHER_{kind}_LIMIT"
            if reader.quantities[request] > reader.quantities[limit]:
                raise SettingsError(
                    f"{request}={reader.quantities_text[request]!r} is above {limit}="
                    f"{reader.quantities_text[limit]!r}; the API server refuses such a container. Lower the "
                    "request or raise the limit"
                )
        return settings

    def gcp_identity(self) -> dict[str, str | None]:
        """The cluster's Workload Identity defaults, as fetcher.contract.gcp.check_identity reads them."""
        return {"workloadPool": self.gcp_workload_pool, "identityProvider": self.gcp_identity_provider}

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (command-line flags win over env vars)."""
        return replace(self, **changes)

    def is_excluded_namespace(self, namespace: str) -> bool:
        """kube-system, kube-public, Ferry's own namespace and the configured list are never injected."""
        return (
            namespace in ALWAYS_EXCLUDED_NAMESPACES
            or namespace == self.namespace
            or namespace in self.excluded_namespaces
        )

    def fetcher_resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.fetcher_cpu_request, "memory": self.fetcher_memory_request},
            "limits": {"cpu": self.fetcher_cpu_limit, "memory": self.fetcher_memory_limit},
        }


def _endpoint_policy(environ: Mapping[str, str]) -> EndpointPolicy:
    try:
        return policy_from_settings(environ.get(ALLOWED_HOSTS_ENV_VAR), environ.get(ALLOW_HTTP_ENV_VAR))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


class _Reader:
    """Typed getters over the env mapping; each error names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        # Each quantity read, by variable: its value as a number and as written.
        self.quantities: dict[str, Fraction] = {}
        self.quantities_text: dict[str, str] = {}

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def matching(self, name: str, default: str, pattern: re.Pattern[str], what: str) -> str:
        value = self._raw(name) or default
        if not pattern.match(value):
            raise SettingsError(f"{name}={value!r} is not {what}")
        return value

    def optional_matching(self, name: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = self._raw(name)
        if value is not None and not pattern.match(value):
            raise SettingsError(f"{name}={value!r} is not {what}")
        return value

    def image(self, name: str, default: str) -> str:
        value = self._raw(name) or default
        if any(ch.isspace() for ch in value) or value.startswith(("-", ":", "@")):
            raise SettingsError(f"{name}={value!r} is not a container image reference like registry/name:tag")
        return value

    def choice(self, name: str, default: Any, choices: tuple[str, ...]) -> Any:
        value = self._raw(name) or default
        if value not in choices:
            raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def optional_quantity(self, name: str) -> str | None:
        return None if self._raw(name) is None else self.quantity(name, "", zero_allowed=True)

    def quantity(self, name: str, default: str, *, zero_allowed: bool = False) -> str:
        """A quantity as Kubernetes reads it, positive (or zero where allowed); written into every pod."""
        value = self._raw(name) or default
        number = parse_quantity(value) if len(value) <= 64 and value == value.strip() else None
        if number is None or number < 0 or (number == 0 and not zero_allowed):
            what = "a Kubernetes quantity like 0, 10m or 64Mi" if zero_allowed else "a positive Kubernetes quantity"
            what += "" if zero_allowed else " like 50m, 64Mi or 1"
            raise SettingsError(f"{name}={quote(value)} is not {what}")
        self.quantities[name] = number
        self.quantities_text[name] = value
        return value

    def duration(self, name: str, default: str) -> float:
        value = self._raw(name) or default
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None

    def user_id(self, name: str, default: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) == 0 or int(value) > 2**31 - 1:
            raise SettingsError(f"{name}={value!r} must be a non-zero uid (injected containers never run as root)")
        return int(value)

    def positive_int(self, name: str, default: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) <= 0:
            raise SettingsError(f"{name}={value!r} must be a positive whole number")
        return int(value)

    def port(self, name: str, default: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) > 65535:
            raise SettingsError(f"{name}={value!r} must be a TCP port from 1 to 65535, or 0 to turn it off")
        return int(value)

    def address(self, name: str, default: str) -> str:
        value = self._raw(name) or default
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise SettingsError(
                f"{name}={quote(value)} must be an IP address to bind, like 0.0.0.0 or 127.0.0.1"
            ) from None
        return value

    def networks(self, name: str) -> tuple[str, ...]:
        """Comma-separated IP addresses or CIDRs, normalized (10.0.0.7 becomes 10.0.0.7/32)."""
        value = self._raw(name) or ""
        items = [part.strip() for part in value.split(",") if part.strip()]
        if len(items) > 64:
            raise SettingsError(f"{name} lists {len(items)} entries; the limit is 64 (use wider CIDRs)")
        try:
            return tuple(str(ipaddress.ip_network(item, strict=False)) for item in items)
        except ValueError:
            bad = next(item for item in items if not _is_network(item))
            raise SettingsError(
                f"{name}: {quote(bad)} is not an IP address or CIDR like 10.0.0.0/16 (comma-separated list expected)"
            ) from None

    def namespaces(self, name: str, default: str) -> frozenset[str]:
        value = self._environ.get(name)
        text = default if value is None else value
        names = [part.strip() for part in text.split(",") if part.strip()]
        for item in names:
            if not _DNS_LABEL_RE.match(item):
                raise SettingsError(f"{name}: {item!r} is not a namespace name (comma-separated list expected)")
        return frozenset(names) | ALWAYS_EXCLUDED_NAMESPACES


def _gcp_settings(reader: _Reader) -> dict[str, str | None]:
    """FERRY_GCP_WORKLOAD_POOL / _IDENTITY_PROVIDER, or both built from FERRY_GCP_PROJECT, _LOCATION, _CLUSTER."""
    project = reader.optional_matching("FERRY_GCP_PROJECT", _GCP_ID_RE, "a Google Cloud project ID like my-project")
    location = reader.optional_matching("FERRY_GCP_LOCATION", _GCP_ID_RE, "a cluster location like us-central1")
    cluster = reader.optional_matching("FERRY_GCP_CLUSTER", _GCP_ID_RE, "a GKE cluster name")
    pool = reader.optional_matching("FERRY_GCP_WORKLOAD_POOL", _GCP_POOL_RE, "a workload pool like PROJECT.svc.id.goog")
    provider = reader.optional_matching(
        "FERRY_GCP_IDENTITY_PROVIDER",
        _GCP_PROVIDER_RE,
        "https://container.googleapis.com/v1/projects/P/locations/L/clusters/C",
    )
    if project and not pool:
        pool = f"{project}.svc.id.goog"
    if project and location and cluster and not provider:
        provider = f"https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{cluster}"
    if bool(pool) != bool(provider):
        raise SettingsError(
            "GKE Workload Identity needs FERRY_GCP_PROJECT, FERRY_GCP_LOCATION and FERRY_GCP_CLUSTER together "
            "(or FERRY_GCP_WORKLOAD_POOL with FERRY_GCP_IDENTITY_PROVIDER); set all of them or none"
        )
    return {"gcp_workload_pool": pool, "gcp_identity_provider": provider}
