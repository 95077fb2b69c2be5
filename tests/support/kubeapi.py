"""A local fake kube-apiserver that serves what a real v1.28 API server returned.

Why it exists: no kube-apiserver can run on these machines, yet the webhook's
Kubernetes code must be exercised through the real `kubernetes` client over
real HTTP, not through mocks of that client. This module serves the JSON
recorded in ``tests/fixtures/kube-apiserver-v1.28/`` (see its README) from a
threaded stdlib HTTP server on 127.0.0.1, with the API server behaviour the
client relies on:

- ``GET /version`` and SecretProviderClass discovery;
- namespaces and SecretProviderClasses (and LimitRanges, none recorded): list, get, the recorded 404 Status,
  and watch streams (chunked JSON lines, resourceVersion, bookmarks,
  ``timeoutSeconds``, and a 410 ``Expired`` ERROR event for a too-old version);
- Secrets and MutatingWebhookConfigurations: get, create (409 AlreadyExists),
  replace (409 Conflict on a stale ``metadata.resourceVersion``), patch (JSON
  patch, merge patch, strategic merge patch with lists merged by ``name``) and
  delete, so the certificate store can be tested.

Test hooks: every request is recorded (``request_count``, ``requests``,
``writes``); recorded watch events are released one at a time
(``play_events``); ``emit``, ``bookmark`` and ``expire_watches`` add events;
``fail_next`` injects error statuses; ``on_request`` lets a test block or
order requests (e.g. to make two writers race).

Usage::

    from tests.support.kubeapi import FakeKubeAPI

    with FakeKubeAPI() as kube, kube.api_client() as api:
        CoreV1Api(api).list_namespace()
        kube.play_events("namespaces")          # release the recorded watch events
        assert kube.request_count("/api/v1/namespaces") == 1

Benchmarks import it the same way (run them as ``python -m bench.<name>`` from
the repository root).
"""

from __future__ import annotations

import base64
import copy
import json
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.paths import FIXTURES

if TYPE_CHECKING:
    import kubernetes.client


NAMESPACES = "namespaces"
SECRET_PROVIDER_CLASSES = "secretproviderclasses"
# None recorded: the collection starts empty, and tests `emit` the LimitRanges they need.
LIMIT_RANGES = "limitranges"
SPC_GROUP_VERSION = "secrets-store.csi.x-k8s.io/v1"
SECRETS = "secrets"
MUTATING_WEBHOOK_CONFIGURATIONS = "mutatingwebhookconfigurations"

_SPC_PREFIX = f"/apis/{SPC_GROUP_VERSION}"
_MWC_PREFIX = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
_WRITE_RV_START = 1000  # resourceVersions of written objects; above every recorded one

RequestHook = Callable[[str, str], None]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake server saw it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # parsed JSON, or None

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


@dataclass
class _InjectedFailure:
    method: str | None
    path_prefix: str
    status: int
    remaining: int


class _Collection:
    """A watchable resource: current objects, a resourceVersion and an event log."""

    def __init__(self, kind: str, api_version: str, items: list[dict[str, Any]], list_rv: int) -> None:
        self.kind = kind
        self.api_version = api_version
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        for item in items:
            self.objects[_key(item)] = item
        self.rv = list_rv
        self.compacted_rv = 0  # watches from an older resourceVersion get 410 Expired
        self.epoch = 0  # bumped by expire_watches(): open watches end with 410
        self.drops = 0  # bumped by drop_watches(): open watches are cut mid-stream
        self.log: list[tuple[int, dict[str, Any]]] = []
        self.pending: deque[dict[str, Any]] = deque()

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Assign the next resourceVersion, update the state, append to the log."""
        event = copy.deepcopy(event)
        obj = event["object"]
        meta = obj.setdefault("metadata", {})
        rv = max(int(meta.get("resourceVersion") or 0), self.rv + 1)
        meta["resourceVersion"] = str(rv)
        self.rv = rv
        if event["type"] in ("ADDED", "MODIFIED"):
            self.objects[_key(obj)] = obj
        elif event["type"] == "DELETED":
            self.objects.pop(_key(obj), None)
        self.log.append((rv, event))
        return event


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", ""), meta["name"])


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _not_found_path() -> dict[str, Any]:
    return _status(404, "NotFound", "the server could not find the requested resource", {})


def _strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch, simplified: lists of objects with a `name` merge by name."""
    if isinstance(patch, list) and isinstance(target, list):
        if all(isinstance(item, dict) and "name" in item for item in patch + target):
            merged = [copy.deepcopy(item) for item in target]
            index = {item["name"]: i for i, item in enumerate(merged)}
            for item in patch:
                if item["name"] in index:
                    merged[index[item["name"]]] = _strategic_merge_patch(merged[index[item["name"]]], item)
                else:
                    merged.append(copy.deepcopy(item))
            return merged
        return copy.deepcopy(patch)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _strategic_merge_patch(result.get(key), value)
    return result


class _HTTPServer(ThreadingMixIn, HTTPServer):
    # Handler threads are joined on close, and every open connection is shut down
    # first, so stop() leaves no thread or socket behind.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    fake: FakeKubeAPI

    def __init__(self, address: tuple[str, int], fake: FakeKubeAPI) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send_json(400, _status(400, "BadRequest", "request body is not JSON"))
            return
        fake = self.server.fake
        request = RecordedRequest(method, parts.path, query, content_type, body)
        fake._record(request)
        hook = fake._request_hook
        if hook is not None:
            hook(method, parts.path)
        failure = fake._take_failure(method, parts.path)
        if failure is not None:
            self._send_json(failure, _status(failure, HTTPStatus(failure).phrase.replace(" ", ""), "injected failure"))
            return
        try:
            fake._route(self, request)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- responses ---------------------------------------------------------

    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True


class FakeKubeAPI:
    """A fake kube-apiserver on 127.0.0.1 serving the recorded v1.28 fixtures.

    ``start()``/``stop()`` or use it as a context manager. ``url`` is
    ``http://127.0.0.1:PORT``; ``api_client()`` returns a `kubernetes` client
    pointed at it. Watchable resources are named ``"namespaces"`` and
    ``"secretproviderclasses"``. State starts as the recorded lists; the recorded
    watch events are held back until ``play_events`` releases them.
    """

    def __init__(
        self,
        fixtures_dir: str | Path = FIXTURES,
        *,
        spc_crd_installed: bool = True,
        max_watch_seconds: float = 300.0,
    ) -> None:
        self.fixtures_dir = Path(fixtures_dir)
        self.max_watch_seconds = max_watch_seconds
        self._cond = threading.Condition()
        self._spc_crd_installed = spc_crd_installed
        self._requests: list[RecordedRequest] = []
        self._failures: list[_InjectedFailure] = []
        self._request_hook: RequestHook | None = None
        self._open_watches: dict[str, int] = {NAMESPACES: 0, SECRET_PROVIDER_CLASSES: 0, LIMIT_RANGES: 0}
        self._stored: dict[str, dict[str, Any]] = {}  # object path -> object (Secrets, MWCs)
        self._write_rv = _WRITE_RV_START
        self._stopping = False
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

        self.version = self._load_json("version.json")
        self.spc_discovery = self._load_json("spc-discovery-v1.json")
        self.spc_not_found = self._load_json("spc-get-missing.404.json")
        ns_list = self._load_json("namespaces-list.json")
        spc_list = self._load_json("spc-list-all.json")
        self._collections = {
            NAMESPACES: _Collection("Namespace", "v1", ns_list["items"], int(ns_list["metadata"]["resourceVersion"])),
            SECRET_PROVIDER_CLASSES: _Collection(
                "SecretProviderClass",
                SPC_GROUP_VERSION,
                spc_list["items"],
                int(spc_list["metadata"]["resourceVersion"]),
            ),
            LIMIT_RANGES: _Collection("LimitRange", "v1", [], int(ns_list["metadata"]["resourceVersion"])),
        }
        self._collections[NAMESPACES].pending.extend(self._load_jsonl("namespaces-watch.jsonl"))
        self._collections[SECRET_PROVIDER_CLASSES].pending.extend(self._load_jsonl("spc-watch.jsonl"))

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        """Listen on 127.0.0.1 (a free port) and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("FakeKubeAPI already started")
        self._stopping = False
        self._server = _HTTPServer(("127.0.0.1", 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """End open watches, close every connection, join all server threads."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        with server.connections_lock:
            for conn in list(server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeKubeAPI not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_client(self) -> kubernetes.client.ApiClient:
        """A real `kubernetes` ApiClient pointed at this server (close it, or use `with`)."""
        import kubernetes.client

        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return kubernetes.client.ApiClient(configuration)

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig whose current context points at this server."""
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is valid YAML
        return path

    # -- request log -------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def writes(self) -> list[RecordedRequest]:
        """Every POST, PUT and PATCH so far."""
        return [r for r in self.requests if r.method != "GET"]

    def request_count(self, path_prefix: str | None = None, *, method: str | None = None) -> int:
        """How many requests matched (path starting with `path_prefix`, and `method`)."""
        return sum(
            1
            for r in self.requests
            if (path_prefix is None or r.path.startswith(path_prefix)) and (method is None or r.method == method)
        )

    def list_count(self, resource: str) -> int:
        """How many non-watch list requests were made for a watchable resource."""
        return sum(1 for r in self.requests if not r.is_watch and self._list_resource(r.path) == resource)

    def watch_count(self, resource: str) -> int:
        """How many watch requests were made for a watchable resource."""
        return sum(1 for r in self.requests if r.is_watch and self._list_resource(r.path) == resource)

    def reset_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)

    # -- hooks -------------------------------------------------------------

    def on_request(self, hook: RequestHook | None) -> None:
        """Call `hook(method, path)` in the handler thread before each request is served."""
        self._request_hook = hook

    def fail_next(self, path_prefix: str, *, status: int = 500, times: int = 1, method: str | None = None) -> None:
        """Answer the next `times` matching requests with `status` and a Status body."""
        with self._cond:
            self._failures.append(_InjectedFailure(method, path_prefix, status, times))

    def _take_failure(self, method: str, path: str) -> int | None:
        with self._cond:
            for failure in self._failures:
                if failure.remaining > 0 and path.startswith(failure.path_prefix):
                    if failure.method is None or failure.method == method:
                        failure.remaining -= 1
                        return failure.status
        return None

    def set_spc_crd_installed(self, installed: bool) -> None:
        """Without the CRD every secrets-store.csi.x-k8s.io path answers 404, as a real server does."""
        with self._cond:
            self._spc_crd_installed = installed
            if not installed:
                self._collections[SECRET_PROVIDER_CLASSES].epoch += 1  # open watches end
            self._cond.notify_all()

    # -- watch control -----------------------------------------------------

    def pending_events(self, resource: str) -> int:
        """Recorded watch events not yet released."""
        with self._cond:
            return len(self._collections[resource].pending)

    def play_events(self, resource: str, count: int | None = None) -> list[dict[str, Any]]:
        """Release the next `count` (default: all) recorded events of `resource`, in order."""
        played = []
        with self._cond:
            coll = self._collections[resource]
            n = len(coll.pending) if count is None else count
            for _ in range(n):
                played.append(coll.apply(coll.pending.popleft()))
            self._cond.notify_all()
        return played

    def emit(self, resource: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Apply and publish an ADDED/MODIFIED/DELETED event for `obj`."""
        with self._cond:
            event = self._collections[resource].apply({"type": event_type, "object": obj})
            self._cond.notify_all()
        return event

    def bookmark(self, resource: str) -> None:
        """Send a BOOKMARK to watches that allow bookmarks. Its resourceVersion is one past the
        last event, as when other resources were written meanwhile (etcd has one revision counter)."""
        with self._cond:
            coll = self._collections[resource]
            coll.rv += 1
            event = {
                "type": "BOOKMARK",
                "object": {
                    "kind": coll.kind,
                    "apiVersion": coll.api_version,
                    "metadata": {"resourceVersion": str(coll.rv)},
                },
            }
            coll.log.append((coll.rv, event))
            self._cond.notify_all()

    def expire_watches(self, resource: str | None = None) -> None:
        """Compact history: open watches get the 410 Expired ERROR event, and so does
        any new watch from a resourceVersion older than now. A fresh list is needed."""
        with self._cond:
            for name, coll in self._collections.items():
                if resource is None or name == resource:
                    coll.rv += 1
                    coll.compacted_rv = coll.rv
                    coll.epoch += 1
            self._cond.notify_all()

    def drop_watches(self, resource: str | None = None) -> None:
        """Cut open watch streams mid-stream (no final chunk), like a dropped connection."""
        with self._cond:
            for name, coll in self._collections.items():
                if resource is None or name == resource:
                    coll.drops += 1
            self._cond.notify_all()

    def open_watches(self, resource: str) -> int:
        """Watch streams currently open for `resource`."""
        with self._cond:
            return self._open_watches[resource]

    def wait_for_watches(self, resource: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least `count` watches of `resource` are open."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._open_watches[resource] < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def resource_version(self, resource: str) -> str:
        with self._cond:
            return str(self._collections[resource].rv)

    # -- stored objects (Secrets, MutatingWebhookConfigurations) -------------

    def put_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
        """Store a Secret directly (no request recorded); returns it with server fields."""
        ns = secret["metadata"]["namespace"]
        return self._store(f"/api/v1/namespaces/{ns}/secrets/{secret['metadata']['name']}", secret)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            return copy.deepcopy(self._stored.get(f"/api/v1/namespaces/{namespace}/secrets/{name}"))

    def put_mutating_webhook_configuration(self, config: dict[str, Any]) -> dict[str, Any]:
        return self._store(f"{_MWC_PREFIX}/{config['metadata']['name']}", config)

    def get_mutating_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        with self._cond:
            return copy.deepcopy(self._stored.get(f"{_MWC_PREFIX}/{name}"))

    def _store(self, path: str, obj: dict[str, Any], *, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self._cond:
            self._write_rv += 1
            meta["resourceVersion"] = str(self._write_rv)
            meta["uid"] = (previous or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = (previous or {}).get("metadata", {}).get("creationTimestamp") or datetime.now(
                UTC
            ).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._stored[path] = obj
            return copy.deepcopy(obj)

    # -- routing -----------------------------------------------------------

    def _load_json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.fixtures_dir / name).read_text())
        return data

    def _load_jsonl(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.fixtures_dir / name).read_text().splitlines() if line.strip()]

    @staticmethod
    def _list_resource(path: str) -> str | None:
        parts = path.rstrip("/").split("/")
        if path.rstrip("/") == "/api/v1/namespaces":
            return NAMESPACES
        if path.rstrip("/") == "/api/v1/limitranges":
            return LIMIT_RANGES
        if path.startswith(_SPC_PREFIX) and parts[-1] == SECRET_PROVIDER_CLASSES:
            return SECRET_PROVIDER_CLASSES
        return None

    def _route(self, handler: _Handler, request: RecordedRequest) -> None:
        path = request.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        method = request.method

        if path == "/version" and method == "GET":
            handler._send_json(200, self.version)
            return
        if path == "/api/v1/namespaces" and method == "GET":
            self._serve_collection(handler, request, NAMESPACES, namespace=None)
            return
        if path == "/api/v1/limitranges" and method == "GET":
            self._serve_collection(handler, request, LIMIT_RANGES, namespace=None)
            return
        if len(parts) == 4 and parts[:3] == ["api", "v1", "namespaces"] and method == "GET":
            self._serve_object(handler, NAMESPACES, ("", parts[3]), None)
            return
        if path.startswith(_SPC_PREFIX):
            self._route_spc(handler, request, path[len(_SPC_PREFIX) :].strip("/").split("/"))
            return
        if len(parts) >= 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == SECRETS:
            collection = "/" + "/".join(parts[:5])
            self._serve_stored(handler, request, collection, parts[5] if len(parts) > 5 else None, parts[3])
            return
        if path.startswith(_MWC_PREFIX):
            rest = path[len(_MWC_PREFIX) :].strip("/")
            self._serve_stored(handler, request, _MWC_PREFIX, rest or None, None)
            return
        handler._send_json(404, _not_found_path())

    def _route_spc(self, handler: _Handler, request: RecordedRequest, rest: list[str]) -> None:
        with self._cond:
            installed = self._spc_crd_installed
        if not installed:
            handler._send_json(404, _not_found_path())
            return
        if request.method != "GET":
            handler._send_json(405, _status(405, "MethodNotAllowed", "the fake serves SecretProviderClasses read-only"))
            return
        if rest == [""]:
            handler._send_json(200, self.spc_discovery)
        elif rest == [SECRET_PROVIDER_CLASSES]:
            self._serve_collection(handler, request, SECRET_PROVIDER_CLASSES, namespace=None)
        elif len(rest) == 3 and rest[0] == "namespaces" and rest[2] == SECRET_PROVIDER_CLASSES:
            self._serve_collection(handler, request, SECRET_PROVIDER_CLASSES, namespace=rest[1])
        elif len(rest) == 4 and rest[0] == "namespaces" and rest[2] == SECRET_PROVIDER_CLASSES:
            not_found = copy.deepcopy(self.spc_not_found)
            not_found["message"] = f'secretproviderclasses.secrets-store.csi.x-k8s.io "{rest[3]}" not found'
            not_found["details"]["name"] = rest[3]
            self._serve_object(handler, SECRET_PROVIDER_CLASSES, (rest[1], rest[3]), not_found)
        else:
            handler._send_json(404, _not_found_path())

    def _serve_object(
        self, handler: _Handler, resource: str, key: tuple[str, str], not_found: dict[str, Any] | None
    ) -> None:
        with self._cond:
            coll = self._collections[resource]
            obj = copy.deepcopy(coll.objects.get(key))
        if obj is None:
            kind = resource if resource != NAMESPACES else "namespaces"
            handler._send_json(
                404,
                not_found or _status(404, "NotFound", f'{kind} "{key[1]}" not found', {"name": key[1], "kind": kind}),
            )
            return
        obj.setdefault("kind", coll.kind)
        obj.setdefault("apiVersion", coll.api_version)
        handler._send_json(200, obj)

    def _serve_collection(
        self, handler: _Handler, request: RecordedRequest, resource: str, namespace: str | None
    ) -> None:
        if request.is_watch:
            self._serve_watch(handler, request, resource, namespace)
            return
        with self._cond:
            coll = self._collections[resource]
            items = [copy.deepcopy(obj) for key, obj in sorted(coll.objects.items()) if namespace in (None, key[0])]
            rv = coll.rv
        if resource in (NAMESPACES, LIMIT_RANGES):  # core lists carry no per-item kind/apiVersion
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
            body = {
                "kind": "NamespaceList" if resource == NAMESPACES else "LimitRangeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        else:
            body = {
                "apiVersion": SPC_GROUP_VERSION,
                "items": items,
                "kind": "SecretProviderClassList",
                "metadata": {"continue": "", "resourceVersion": str(rv)},
            }
        handler._send_json(200, body)

    def _serve_watch(self, handler: _Handler, request: RecordedRequest, resource: str, namespace: str | None) -> None:
        query = request.query
        timeout = min(float(query.get("timeoutSeconds") or self.max_watch_seconds), self.max_watch_seconds)
        deadline = time.monotonic() + timeout
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        since = query.get("resourceVersion") or "0"

        def wanted(event: dict[str, Any]) -> bool:
            if event["type"] == "BOOKMARK":
                return bookmarks
            return namespace is None or event["object"]["metadata"].get("namespace") == namespace

        coll = self._collections[resource]
        with self._cond:
            epoch = coll.epoch
            drops = coll.drops
            if since == "0":  # "any version": synthetic ADDED events for the current state
                batch = [
                    {"type": "ADDED", "object": copy.deepcopy(obj)}
                    for key, obj in sorted(coll.objects.items())
                    if namespace in (None, key[0])
                ]
                cursor = len(coll.log)
                expired = False
            else:
                rv = int(since)
                expired = rv < coll.compacted_rv
                cursor = next((i for i, (event_rv, _) in enumerate(coll.log) if event_rv > rv), len(coll.log))
                batch = []
            self._open_watches[resource] += 1
            self._cond.notify_all()
        handler._start_chunked()
        try:
            if expired:
                handler._write_chunk(self._expired_line(since))
                return
            while True:
                for event in batch:
                    handler._write_chunk(json.dumps(event).encode() + b"\n")
                with self._cond:
                    while True:
                        if self._stopping or time.monotonic() >= deadline:
                            return
                        if coll.drops != drops:
                            handler.close_connection = True
                            handler.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if coll.epoch != epoch:
                            expired = True
                            break
                        if cursor < len(coll.log):
                            break
                        self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                        if handler._client_gone():
                            handler.close_connection = True
                            return
                    batch = [event for _, event in coll.log[cursor:] if wanted(event)]
                    cursor = len(coll.log)
                if expired:
                    with self._cond:
                        installed = self._spc_crd_installed or resource != SECRET_PROVIDER_CLASSES
                    if installed:
                        handler._write_chunk(self._expired_line(since))
                    return
        finally:
            with self._cond:
                self._open_watches[resource] -= 1
                self._cond.notify_all()
            try:
                handler._end_chunked()
            except OSError:
                handler.close_connection = True

    @staticmethod
    def _expired_line(since: str) -> bytes:
        status = _status(410, "Expired", f"too old resource version: {since}")
        return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"

    def _serve_stored(
        self, handler: _Handler, request: RecordedRequest, collection: str, name: str | None, namespace: str | None
    ) -> None:
        kind = "secrets" if collection.endswith("/secrets") else MUTATING_WEBHOOK_CONFIGURATIONS
        group = "" if kind == "secrets" else "admissionregistration.k8s.io"
        method = request.method
        if name is None:
            if method == "POST":
                self._create(handler, request, collection, kind, group, namespace)
            elif method == "GET":
                with self._cond:
                    items = [
                        copy.deepcopy(o) for p, o in sorted(self._stored.items()) if p.rsplit("/", 1)[0] == collection
                    ]
                handler._send_json(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
            else:
                handler._send_json(405, _status(405, "MethodNotAllowed", "method not allowed"))
            return
        path = f"{collection}/{name}"
        with self._cond:
            current = copy.deepcopy(self._stored.get(path))
        details = {"name": name, "kind": kind} | ({"group": group} if group else {})
        if current is None:
            handler._send_json(404, _status(404, "NotFound", f'{kind} "{name}" not found', details))
            return
        if method == "GET":
            handler._send_json(200, current)
        elif method == "PUT":
            body = request.body or {}
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            if body.get("metadata", {}).get("name") != name:
                handler._send_json(400, _status(400, "BadRequest", "the name of the object does not match the URL"))
            elif sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                handler._send_json(409, self._conflict(kind, group, name, details))
            elif (error := self._invalid(kind, body, current)) is not None:
                handler._send_json(422, _status(422, "Invalid", error, details))
            else:
                handler._send_json(200, self._store(path, self._normalise(body, namespace), previous=current))
        elif method == "PATCH":
            patched = self._apply_patch(request, current)
            if isinstance(patched, str):
                handler._send_json(422, _status(422, "Invalid", patched, details))
            elif (error := self._invalid(kind, patched, current)) is not None:
                handler._send_json(422, _status(422, "Invalid", error, details))
            else:
                handler._send_json(200, self._store(path, patched, previous=current))
        else:
            handler._send_json(405, _status(405, "MethodNotAllowed", "method not allowed"))

    def _create(
        self,
        handler: _Handler,
        request: RecordedRequest,
        collection: str,
        kind: str,
        group: str,
        namespace: str | None,
    ) -> None:
        body = request.body or {}
        name = body.get("metadata", {}).get("name")
        if not name:
            handler._send_json(422, _status(422, "Invalid", "metadata.name: Required value"))
            return
        path = f"{collection}/{name}"
        details = {"name": name, "kind": kind} | ({"group": group} if group else {})
        if (error := self._invalid(kind, body, None)) is not None:
            handler._send_json(422, _status(422, "Invalid", error, details))
            return
        with self._cond:
            exists = path in self._stored
            if not exists:  # reserve under the lock: first writer wins
                self._stored[path] = {}
        if exists:
            message = f'{kind}{"." + group if group else ""} "{name}" already exists'
            handler._send_json(409, _status(409, "AlreadyExists", message, details))
            return
        handler._send_json(201, self._store(path, self._normalise(body, namespace)))

    @staticmethod
    def _conflict(kind: str, group: str, name: str, details: dict[str, Any]) -> dict[str, Any]:
        message = (
            f'Operation cannot be fulfilled on {kind}{"." + group if group else ""} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        return _status(409, "Conflict", message, details)

    @staticmethod
    def _normalise(body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        body = copy.deepcopy(body)
        if namespace is not None:
            body.setdefault("metadata", {})["namespace"] = namespace
        string_data = body.pop("stringData", None)
        if string_data:
            data = body.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(value.encode()).decode()
        return body

    @staticmethod
    def _invalid(kind: str, obj: dict[str, Any], current: dict[str, Any] | None) -> str | None:
        if kind != "secrets":
            return None
        secret_type = obj.get("type") or "Opaque"
        if current is not None and secret_type != (current.get("type") or "Opaque"):
            return "type: Invalid value: field is immutable"
        if secret_type == "kubernetes.io/tls":
            data = obj.get("data") or {}
            for required in ("tls.crt", "tls.key"):
                if required not in data:
                    return f"data[{required}]: Required value"
        for key, value in (obj.get("data") or {}).items():
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                return f"data[{key}]: Invalid value: illegal base64 data"
        return None

    @staticmethod
    def _apply_patch(request: RecordedRequest, current: dict[str, Any]) -> dict[str, Any] | str:
        content_type = (request.content_type or "").split(";")[0].strip()
        if content_type == "application/json-patch+json":
            import jsonpatch

            try:
                patched: dict[str, Any] = jsonpatch.apply_patch(current, request.body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return f"the server rejected our request due to an error in our request: {exc}"
            return patched
        if content_type == "application/strategic-merge-patch+json":
            strategic: dict[str, Any] = _strategic_merge_patch(current, request.body)
            return strategic
        return f"unsupported patch content type {content_type!r}"
