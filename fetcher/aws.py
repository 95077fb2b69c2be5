"""One boto3 Session per process, and clients configured the same way everywhere.

Why it exists: the fetcher starts in every injected pod, so client setup is
both a latency and a correctness concern. One session means one credential
resolution (IRSA web identity or EKS Pod Identity, found by boto3's default
chain; token files are re-read by botocore, never cached here). The chain
stops before the node's instance role: a pod without IRSA or Pod Identity
must fail with "no usable AWS identity", never fetch with the node's role
through IMDS (the webhook also sets ``AWS_EC2_METADATA_DISABLED=true``). Each client
gets an explicit retry mode (`standard`; the installed default is `legacy`)
and explicit timeouts, so a dead endpoint costs seconds, not minutes.

Endpoints: boto3 already honours ``AWS_ENDPOINT_URL`` (and the per-service
``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL_SSM``), but those
apply to every region. To point one region somewhere else (a test's
fault-injecting stub as the primary with moto as the failover, or a demo), set
``FERRY_ENDPOINT_URL_<REGION>`` with the region upper-cased and dashes as
underscores, e.g. ``FERRY_ENDPOINT_URL_US_EAST_1=http://127.0.0.1:4566``. It
wins over ``AWS_ENDPOINT_URL`` for that region only.

Counting: every API call made through the session (including the STS
web-identity exchange) is counted per service, operation and region by a
botocore ``before-call`` hook, so tests and benchmarks can assert "calls per
init" and "calls per unchanged refresh". Retries of one call are not counted
again; they show in ``attempts``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
import botocore.session
from botocore.config import Config

from fetcher.errors import ConfigError

Service = Literal["secretsmanager", "ssm"]

ENDPOINT_OVERRIDE_PREFIX = "FERRY_ENDPOINT_URL_"
MAX_ATTEMPTS_ENV_VAR = "FERRY_AWS_MAX_ATTEMPTS"
CONNECT_TIMEOUT_ENV_VAR = "FERRY_AWS_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV_VAR = "FERRY_AWS_READ_TIMEOUT"
USER_AGENT_EXTRA = "ferry-fetcher/0.1"
# botocore's name for the provider that asks IMDS for the node's instance role.
NODE_ROLE_PROVIDER = "iam-role"


@dataclass(frozen=True)
class AwsSettings:
    """How the fetcher talks to AWS. Defaults suit a pod; tests shorten them."""

    # Total tries per call, first one included (botocore "standard" retry mode).
    max_attempts: int = 5
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    # Matches the fetch pool's width, so concurrent calls never queue for a socket.
    max_pool_connections: int = 10
    # region -> endpoint URL, from FERRY_ENDPOINT_URL_<REGION>.
    endpoint_overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AwsSettings:
        overrides = {
            key[len(ENDPOINT_OVERRIDE_PREFIX) :].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith(ENDPOINT_OVERRIDE_PREFIX) and value
        }
        defaults = cls()
        return cls(
            max_attempts=int(_number(environ, MAX_ATTEMPTS_ENV_VAR, defaults.max_attempts, minimum=1)),
            connect_timeout=_number(environ, CONNECT_TIMEOUT_ENV_VAR, defaults.connect_timeout, minimum=0.1),
            read_timeout=_number(environ, READ_TIMEOUT_ENV_VAR, defaults.read_timeout, minimum=0.1),
            endpoint_overrides=overrides,
        )

    def client_config(self) -> Config:
        return Config(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            user_agent_extra=USER_AGENT_EXTRA,
        )


def _number(environ: Mapping[str, str], key: str, default: float, *, minimum: float) -> float:
    raw = environ.get(key)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{key}={raw!r} must be at least {minimum:g}")
    return value


def pod_identity_session() -> Any:
    """A boto3 Session whose credential chain never reaches the node's instance role."""
    core = botocore.session.Session()
    core.get_component("credential_provider").remove(NODE_ROLE_PROVIDER)
    return boto3.session.Session(botocore_session=core)


class ApiCallCounter:
    """Thread-safe count of AWS API calls, keyed by (service, operation, region)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str, str]] = Counter()
        self._attempts: Counter[tuple[str, str, str]] = Counter()

    def record_call(self, service: str, operation: str, region: str) -> None:
        with self._lock:
            self._calls[(service, operation, region)] += 1

    def record_attempt(self, service: str, operation: str, region: str) -> None:
        with self._lock:
            self._attempts[(service, operation, region)] += 1

    def count(self, operation: str | None = None, *, region: str | None = None, service: str | None = None) -> int:
        """Calls matching every filter given (None matches all)."""
        return self._sum(self._calls, operation, region, service)

    def attempts(self, operation: str | None = None, *, region: str | None = None, service: str | None = None) -> int:
        """HTTP attempts (retries included) matching every filter given."""
        return self._sum(self._attempts, operation, region, service)

    def by_operation(self) -> dict[str, int]:
        """{"secretsmanager.GetSecretValue": n, ...} summed over regions."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (service, operation, _), number in self._calls.items():
                totals[f"{service}.{operation}"] += number
        return dict(sorted(totals.items()))

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._attempts.clear()

    def _sum(
        self, counter: Counter[tuple[str, str, str]], operation: str | None, region: str | None, service: str | None
    ) -> int:
        with self._lock:
            return sum(
                number
                for (svc, op, reg), number in counter.items()
                if (operation is None or op == operation)
                and (region is None or reg == region)
                and (service is None or svc == service)
            )


class AwsClients:
    """The process's session and its clients, one per (service, region), created on first use."""

    def __init__(self, settings: AwsSettings | None = None, session: Any = None) -> None:
        self.settings = settings or AwsSettings()
        self.calls = ApiCallCounter()
        self.session: Any = session or pod_identity_session()
        self.session.events.register("before-call", self._count_call)
        self.session.events.register("request-created", self._count_attempt)
        self._config = self.settings.client_config()
        self._clients: dict[tuple[str, str], Any] = {}
        # botocore sessions are not safe for concurrent client creation.
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AwsClients:
        return cls(AwsSettings.from_env(environ))

    def client(self, service: Service, region: str) -> Any:
        key = (service, region)
        existing = self._clients.get(key)
        if existing is not None:
            return existing
        with self._lock:
            existing = self._clients.get(key)
            if existing is None:
                endpoint = self.settings.endpoint_overrides.get(region)
                existing = self.session.client(
                    service,
                    region_name=region,
                    config=self._config,
                    **({"endpoint_url": endpoint} if endpoint else {}),
                )
                self._clients[key] = existing
            return existing

    def close(self) -> None:
        """Close every client's connection pool (tests and benchmarks create many)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _count_call(self, model: Any, request_signer: Any = None, **_: Any) -> None:
        region = getattr(request_signer, "region_name", None) or "?"
        self.calls.record_call(model.service_model.service_name, model.name, region)

    def _count_attempt(self, request: Any, operation_name: str = "?", event_name: str = "", **_: Any) -> None:
        # request-created fires once per HTTP attempt; its name is "request-created.<service-id>.<operation>".
        service = event_name.split(".")[1].replace("-", "") if event_name.count(".") >= 2 else "?"
        region = str((getattr(request, "context", None) or {}).get("client_region") or "?")
        self.calls.record_attempt(service, operation_name, region)
