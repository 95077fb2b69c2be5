"""The fetcher's AWS client: four JSON-protocol calls, signed with the pod's identity, over the standard library.

botocore would cost every pod about 30 MB and 200 ms of start-up for the four calls Ferry makes.
Details: docs/aws-client.md.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fetcher.awscreds import CallRecorder, CredentialCache, choose_source
from fetcher.awsendpoints import EndpointRules
from fetcher.awsroles import RoleSessions
from fetcher.awswire import is_retryable, json_error
from fetcher.errors import ConfigError
from fetcher.sigv4 import Credentials, sign
from fetcher.transport import Backoff, HttpClient, HttpSettings, Proxies, with_retries

Service = Literal["secretsmanager", "ssm"]

ENDPOINT_OVERRIDE_PREFIX = "FERRY_ENDPOINT_URL_"
MAX_ATTEMPTS_ENV_VAR = "FERRY_AWS_MAX_ATTEMPTS"
CONNECT_TIMEOUT_ENV_VAR = "FERRY_AWS_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV_VAR = "FERRY_AWS_READ_TIMEOUT"
USER_AGENT = "ferry-fetcher/0.1"
# The JSON protocol's target prefix per service.
TARGET_PREFIX = {"secretsmanager": "secretsmanager", "ssm": "AmazonSSM"}

SendHook = Callable[[str, Mapping[str, str]], None]


@dataclass(frozen=True)
class AwsSettings:
    """How the fetcher talks to AWS. Defaults suit a pod; tests shorten them."""

    # Total tries per call, first one included.
    max_attempts: int = 5
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    # Matches the fetch pool's width, so concurrent calls never queue for a socket.
    max_pool_connections: int = 10
    # region -> endpoint URL, from FERRY_ENDPOINT_URL_<REGION>.
    endpoint_overrides: Mapping[str, str] = field(default_factory=dict)
    # No retry starts once one call has taken this long (seconds, backoff sleeps included).
    retry_budget: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AwsSettings:
        defaults = cls()
        return cls(
            max_attempts=int(_number(environ, MAX_ATTEMPTS_ENV_VAR, defaults.max_attempts, minimum=1)),
            connect_timeout=_number(environ, CONNECT_TIMEOUT_ENV_VAR, defaults.connect_timeout, minimum=0.1),
            read_timeout=_number(environ, READ_TIMEOUT_ENV_VAR, defaults.read_timeout, minimum=0.1),
            endpoint_overrides=EndpointRules.from_env(environ).region_overrides or {},
        )

    def backoff(self) -> Backoff:
        return Backoff(max_attempts=self.max_attempts, budget=self.retry_budget)


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


@dataclass(frozen=True)
class ClientMeta:
    endpoint_url: str
    region_name: str


class AwsJsonClient:
    """One service in one region: the few operations Ferry calls, as boto3-shaped dicts."""

    def __init__(self, service: Service, region: str, endpoint_url: str, owner: AwsClients) -> None:
        self.service = service
        self.region = region
        self.meta = ClientMeta(endpoint_url, region)
        self._owner = owner
        # The same for every call of this client: parsed once, not per call.
        self._url = endpoint_url + "/"
        parts = urlsplit(self._url)
        self._host = parts.netloc.rpartition("@")[2]
        self._path = parts.path or "/"

    def get_secret_value(self, **params: str) -> dict[str, Any]:
        return _decode_binary(self.call("GetSecretValue", params))

    def batch_get_secret_value(self, **params: Any) -> dict[str, Any]:
        reply = self.call("BatchGetSecretValue", params)
        reply["SecretValues"] = [_decode_binary(item) for item in reply.get("SecretValues") or []]
        return reply

    def describe_secret(self, **params: str) -> dict[str, Any]:
        return self.call("DescribeSecret", params)

    def get_parameters(self, **params: Any) -> dict[str, Any]:
        return self.call("GetParameters", params)

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        owner = self._owner
        owner.calls.record_call(self.service, operation, self.region)
        body = json.dumps(params, separators=(",", ":")).encode()
        url, host = self._url, self._host
        base = {
            "content-type": "application/x-amz-json-1.1",
            "x-amz-target": f"{TARGET_PREFIX[self.service]}.{operation}",
            "user-agent": USER_AGENT,
        }

        def attempt() -> dict[str, Any]:
            owner.calls.record_attempt(self.service, operation, self.region)
            credentials = owner.credentials.get(self.region)
            headers = sign(
                method="POST",
                host=host,
                path=self._path,
                headers=base,
                body=body,
                credentials=credentials,
                region=self.region,
                service=self.service,
                now=datetime.now(UTC),
            )
            for hook in owner.on_send:
                hook(operation, headers)
            reply = owner.http.request("POST", url, headers, body)
            if reply.status != 200:
                raise json_error(reply, operation)
            parsed = reply.json()
            return parsed if isinstance(parsed, dict) else {}

        return with_retries(attempt, is_retryable, owner.backoff)


def _decode_binary(reply: dict[str, Any]) -> dict[str, Any]:
    if isinstance(reply.get("SecretBinary"), str):
        reply["SecretBinary"] = base64.b64decode(reply["SecretBinary"])
    return reply


class AwsClients:
    """The process's credentials, connections and clients, one per (service, region), created on first use."""

    def __init__(
        self,
        settings: AwsSettings | None = None,
        environ: Mapping[str, str] | None = None,
        credentials: Callable[[str], Credentials] | None = None,
        pinned: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        """`credentials`: a source to use instead of the environment's chain (`once` with a profile).

        `pinned`: (service, region) -> URL, the pod's own endpoints from its spec (awsendpoints.py).
        """
        environ = os.environ if environ is None else environ
        self.settings = settings or AwsSettings()
        self.calls = ApiCallCounter()
        rules = EndpointRules.from_env(environ)
        self.endpoints = EndpointRules(
            fips=rules.fips,
            dualstack=rules.dualstack,
            region_overrides=self.settings.endpoint_overrides,
            configured=rules.configured,
            pinned=pinned,
        )
        self.http = HttpClient(
            HttpSettings(
                connect_timeout=self.settings.connect_timeout,
                read_timeout=self.settings.read_timeout,
                pool_size=self.settings.max_pool_connections,
                ca_bundle=environ.get("AWS_CA_BUNDLE") or None,
                proxies=Proxies.from_env(environ),
            )
        )
        self.backoff = self.settings.backoff()
        recorder: CallRecorder = self.calls
        source = credentials or choose_source(environ, self.http, self.endpoints, self.backoff, recorder)
        self.credentials = CredentialCache(source)
        # Called with (operation, signed headers) before each attempt is sent; tests observe signing with it.
        self.on_send: list[SendHook] = []
        self._clients: dict[tuple[str, str], AwsJsonClient] = {}
        self._lock = threading.Lock()

        # A role per object (awsroles.py): one client view per role, sharing connections and counters.
        self.roles = RoleSessions(self, environ)

    def with_credentials(self, credentials: CredentialCache) -> AwsClients:
        """This client set, signing with other credentials: connections, counters and hooks are shared."""
        view = copy.copy(self)
        view.credentials = credentials
        view._clients = {}
        view._lock = threading.Lock()
        return view

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        credentials: Callable[[str], Credentials] | None = None,
        pinned: Mapping[tuple[str, str], str] | None = None,
    ) -> AwsClients:
        return cls(AwsSettings.from_env(environ), environ, credentials, pinned)

    def client(self, service: Service, region: str) -> AwsJsonClient:
        key = (service, region)
        with self._lock:
            existing = self._clients.get(key)
            if existing is None:
                existing = AwsJsonClient(service, region, self.endpoints.url(service, region), self)
                self._clients[key] = existing
            return existing

    def close(self) -> None:
        """Close every pooled connection (tests and benchmarks create many clients)."""
        self.http.close()
