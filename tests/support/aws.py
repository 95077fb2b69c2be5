"""Helpers for the fetcher's tests: local HTTP stubs, moto seeding, spec and client builders.

Why it exists: what moto cannot do (an AWS endpoint that answers 5xx or
AccessDenied on demand, an EKS Pod Identity credentials endpoint) is served by
`LocalHttpStub`, a real HTTP server on loopback, so the fetcher's client parses
real responses. The fixtures that use these live in conftest.py beside this file.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session

from fetcher.aws import AwsClients, AwsSettings
from fetcher.contract import FetchSpec, build_spec
from tests.support.paths import REPO_ROOT

PRIMARY = "us-east-1"
FAILOVER = "us-west-2"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def operation(self) -> str:
        """The AWS JSON-protocol operation (X-Amz-Target: secretsmanager.GetSecretValue -> GetSecretValue)."""
        return self.headers.get("x-amz-target", "").rpartition(".")[2]


Reply = tuple[int, Mapping[str, str], bytes]
Responder = Callable[[RecordedRequest], Reply]


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) overflows when 10 fetch threads connect at once on a busy machine.
    request_queue_size = 64


@dataclass
class LocalHttpStub:
    """A real HTTP server on 127.0.0.1 that answers with `responder` and records every request."""

    responder: Responder
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> LocalHttpStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = RecordedRequest(
                    self.command,
                    self.path,
                    {key.lower(): value for key, value in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                stub.requests.append(request)
                status, headers, body = stub.responder(request)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = _StubServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def operations(self) -> list[str]:
        return [request.operation for request in self.requests]


def aws_json_error(status: int, code: str, message: str) -> Reply:
    """How Secrets Manager and SSM (AWS JSON 1.1) send an error."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "stub"}, body


@dataclass
class Seeder:
    """boto3 clients (not the fetcher's, so not counted) that put test data into moto; cached per region."""

    endpoint_url: str
    session: Any = field(
        default_factory=lambda: fast_session(aws_access_key_id="testing", aws_secret_access_key="testing")
    )
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def sm(self, region: str = PRIMARY) -> Any:
        return self._client("secretsmanager", region)

    def ssm(self, region: str = PRIMARY) -> Any:
        return self._client("ssm", region)

    def secret(self, name: str, value: str | bytes, region: str = PRIMARY) -> str:
        """Create a secret; returns its VersionId."""
        key = "SecretBinary" if isinstance(value, bytes) else "SecretString"
        return str(self.sm(region).create_secret(Name=name, **{key: value})["VersionId"])

    def parameter(self, name: str, value: str, region: str = PRIMARY, *, secure: bool = True) -> int:
        reply = self.ssm(region).put_parameter(
            Name=name, Value=value, Type="SecureString" if secure else "String", Overwrite=True
        )
        return int(reply["Version"])

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, service: str, region: str) -> Any:
        if (service, region) not in self._clients:
            self._clients[(service, region)] = self.session.client(
                service, region_name=region, endpoint_url=self.endpoint_url
            )
        return self._clients[(service, region)]


_shared_loader: Any = None


def fast_session(**credentials: str) -> Any:
    """A fresh boto3 Session (fresh credential chain, fresh env) that reuses parsed service models.

    Parsing botocore's JSON models costs ~0.1-0.3 s per session; tests create one session each, so
    they share the loader (a cache of those files). Behaviour is unchanged; a pod has one session anyway.
    """
    global _shared_loader
    core = botocore.session.Session()
    if _shared_loader is None:
        _shared_loader = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _shared_loader)
    session = boto3.session.Session(botocore_session=core, **credentials)
    paths = _shared_loader.search_paths
    paths[:] = list(dict.fromkeys(paths))  # boto3 appends its data path once per session
    return session


def make_clients(**settings: Any) -> AwsClients:
    """Fetcher clients with test-friendly settings (one attempt, short timeouts) unless overridden."""
    defaults: dict[str, Any] = {"max_attempts": 1, "connect_timeout": 1.0, "read_timeout": 5.0}
    return AwsClients(AwsSettings(**{**defaults, **settings}))


def make_spec(objects: list[dict[str, Any]] | str, **options: Any) -> FetchSpec:
    """A validated spec in the primary region; options are build_spec's keyword arguments."""
    options.setdefault("region", PRIMARY)
    options.setdefault("min_refresh_seconds", 0.0)
    return build_spec(objects=objects, **options)


def fetcher_env(moto_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `python -m fetcher` subprocess: no AWS_* from the parent, moto as AWS."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "FERRY_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    env.update(extra)
    return env


FETCHER_COMMAND = [sys.executable, "-m", "fetcher"]


def forwarding_sts(moto_url: str) -> Responder:
    """A loopback STS that records each request (the stub does) and answers with moto's reply."""
    target = urlsplit(moto_url)

    def forward(request: RecordedRequest) -> Reply:
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=10)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            connection.request(request.method, request.path, body=request.body, headers=headers)
            reply = connection.getresponse()
            return reply.status, {"Content-Type": reply.getheader("Content-Type") or "text/xml"}, reply.read()
        finally:
            connection.close()

    return forward


def seed_in_account(moto_url: str, role: str, name: str, value: str) -> None:
    """Create a secret in the role's account: moto keeps one store per account, as AWS does."""
    import boto3

    plain = {"region_name": "us-east-1", "endpoint_url": moto_url}
    sts = boto3.client("sts", aws_access_key_id="testing", aws_secret_access_key="testing", **plain)
    keys = sts.assume_role(RoleArn=role, RoleSessionName="seed")["Credentials"]
    boto3.client(
        "secretsmanager",
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
        **plain,
    ).create_secret(Name=name, SecretString=value)
