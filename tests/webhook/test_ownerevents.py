"""Owner Events: which admissions make one, and the limits that keep a tenant from flooding with them."""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

from webhook import ownerevents
from webhook.ownerevents import MAX_MESSAGE_CHARS, OwnerEvents, owner_event

RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c", "uid": "u-1", "controller": True}


def request(namespace: str = "team-a", owner: dict[str, Any] | None = RS, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"generateName": "web-7d9f8c-"}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "x"}, owner]
    return {"uid": "r", "namespace": namespace, "object": {"metadata": meta}, **extra}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_warning_becomes_a_warning_event_on_the_controlling_owner() -> None:
    event = owner_event(request(), "skipped", ("ferry.dev/objects set but ferry.dev/inject is not true",), None)
    assert event is not None
    body = event.body(datetime.datetime(2026, 12, 6))
    assert body["involvedObject"] == {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c", "namespace": "team-a", "uid": "u-1",
    }  # fmt: skip
    assert body["type"] == "Warning" and body["reason"] == "FerryWarning"
    assert "ferry.dev/inject is not true" in body["message"]
    assert body["metadata"]["namespace"] == "team-a"


def test_a_denial_becomes_a_ferry_denied_event() -> None:
    event = owner_event(request(), "denied", (), "objectType: 'nope' is not secretsmanager or ssmparameter")
    assert event is not None and event.reason == "FerryDenied" and "nope" in event.message


def test_no_event_for_bare_pods_dry_runs_clean_admissions_or_bad_owner_references() -> None:
    assert owner_event(request(owner=None), "denied", (), "m") is None  # kubectl already shows it to the creator
    assert owner_event(request(dryRun=True), "denied", (), "m") is None
    assert owner_event(request(), "injected", (), None) is None
    assert owner_event(request(owner={**RS, "uid": 7}), "denied", (), "m") is None
    assert owner_event(request(owner={**RS, "name": "x" * 300}), "denied", (), "m") is None


def test_the_message_is_bounded_however_many_and_long_the_warnings() -> None:
    event = owner_event(request(), "skipped", tuple("w" * 5000 for _ in range(50)), None)
    assert event is not None and len(event.message) <= MAX_MESSAGE_CHARS


def test_the_same_message_on_the_same_owner_is_posted_once() -> None:
    posted: list[dict[str, Any]] = []
    events = OwnerEvents(posted.append, clock=Clock())
    for _ in range(100):  # a Deployment's replicas, all with the same warning
        events.offer(request(), "skipped", ("same warning",), None)
    events.drain()
    assert len(posted) == 1 and events.counts["duplicate"] == 99


def test_offer_never_posts_on_the_callers_thread() -> None:
    posted: list[str] = []
    events = OwnerEvents(lambda body: posted.append(threading.current_thread().name))
    events.offer(request(), "denied", (), "m")
    assert posted == []  # only queued
    events.start()
    try:
        deadline = time.monotonic() + 5
        while not posted and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        events.stop()
    assert posted == ["owner-events"]


def test_one_namespace_cannot_flood_and_the_whole_replica_is_bounded() -> None:
    clock = Clock()
    posted: list[dict[str, Any]] = []
    events = OwnerEvents(posted.append, clock=clock)
    for i in range(1000):  # distinct messages, so dedup does not help: only the limits do
        events.offer(request("noisy"), "skipped", (f"warning {i}",), None)
    events.drain()
    assert len(posted) == ownerevents.NAMESPACE_BURST
    # Another tenant still gets through...
    events.offer(request("quiet"), "skipped", ("one",), None)
    events.drain()
    assert posted[-1]["metadata"]["namespace"] == "quiet"
    # ...but across thousands of namespaces the replica posts at most its global burst.
    for i in range(5000):
        events.offer(request(f"ns-{i}"), "skipped", ("w",), None)
    events.drain()
    assert len(posted) <= ownerevents.NAMESPACE_BURST + 1 + ownerevents.GLOBAL_BURST
    # Time refills the buckets.
    clock.now += 3600
    events.offer(request("noisy"), "skipped", ("later",), None)
    events.drain()
    assert posted[-1]["message"].endswith("later")


def test_a_full_queue_drops_and_a_failing_api_server_is_only_counted() -> None:
    def fail(body: dict[str, Any]) -> None:
        raise RuntimeError("apiserver down")

    events = OwnerEvents(fail, clock=Clock())
    for i in range(ownerevents.QUEUE_SIZE + 50):
        events.offer(request(f"ns-{i}"), "denied", (), "m")
    assert events.counts["dropped"] > 0 or events.counts["limited"] > 0
    events.drain()
    assert events.counts["failed"] == events.counts["queued"]


def test_unknown_namespaces_get_no_events() -> None:
    posted: list[dict[str, Any]] = []
    events = OwnerEvents(posted.append, known_namespace=lambda ns: ns == "team-a")
    events.offer(request("forged"), "denied", (), "m")
    events.offer(request("team-a"), "denied", (), "m")
    events.drain()
    assert [body["metadata"]["namespace"] for body in posted] == ["team-a"]


def test_nothing_but_ferrys_message_and_the_owner_reaches_the_event() -> None:
    """The pod's env values, labels and other annotations never travel into an Event."""
    req = request()
    req["object"]["metadata"]["annotations"] = {"team.example/token": "hunter2-annotation"}
    req["object"]["spec"] = {"containers": [{"name": "a", "env": [{"name": "PASSWORD", "value": "hunter2-env"}]}]}
    event = owner_event(req, "skipped", ("a warning about names only",), None)
    assert event is not None
    text = repr(event.body(datetime.datetime(2026, 12, 6)))
    assert "hunter2" not in text


def _forged_review(namespace: str) -> bytes:
    import json

    from tests.support.reviews import pod_create_review

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-",
            "annotations": {"ferry.dev/objects": "- objectName: x\n  objectType: secretsmanager\n"},
            "ownerReferences": [RS],
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }
    return json.dumps(pod_create_review(pod, namespace=namespace)).encode()


def _handler(addresses: tuple[str, ...], events: OwnerEvents) -> Any:
    from webhook.edge.app import AdmissionHandler
    from webhook.edge.metrics import AdmissionMetrics
    from webhook.policy.view import StaticView
    from webhook.settings import Settings

    settings = Settings(default_region="eu-west-1", api_server_addresses=addresses)
    return AdmissionHandler(settings, StaticView(), True, AdmissionMetrics(), events)


def test_a_review_forged_by_a_pod_writes_no_event_into_another_namespace() -> None:
    """Any pod can POST to /mutate naming any namespace and owner: with the API server's addresses known,
    only reviews that arrived from them become Events."""
    posted: list[dict[str, Any]] = []
    events = OwnerEvents(posted.append, clock=Clock())
    handler = _handler(("10.0.0.1/32",), events)
    status, _ = handler.handle(_forged_review("victim"), peer="10.244.3.7")  # a tenant pod
    assert status == 200
    handler.handle(_forged_review("victim"), peer=None)  # unknown peer: not trusted either
    events.drain()
    assert posted == []
    handler.handle(_forged_review("team-a"), peer="10.0.0.1")  # the API server itself
    events.drain()
    assert [body["metadata"]["namespace"] for body in posted] == ["team-a"]


def test_without_api_server_addresses_the_event_says_the_claim_is_unverified() -> None:
    posted: list[dict[str, Any]] = []
    events = OwnerEvents(posted.append, clock=Clock())
    _handler((), events).handle(_forged_review("team-a"), peer="10.244.3.7")
    events.drain()
    assert len(posted) == 1 and "unverified" in posted[0]["message"]


def test_tenant_text_in_an_event_has_no_control_characters_or_newlines() -> None:
    owner = {**RS, "kind": "Replica\nSet\x1b[31m"}
    warning = "annotation ferry.dev/x: 'line1\nFAKE: Ferry approved\r\x00\u2028\x7f'"
    event = owner_event(request(owner=owner), "skipped", (warning,), None)
    assert event is not None
    assert all(ch.isprintable() for ch in event.message), repr(event.message)
    denied = owner_event(request(), "denied", (), "bad\nvalue\t\x1b")
    assert denied is not None and all(ch.isprintable() for ch in denied.message)
    assert len(denied.message) <= MAX_MESSAGE_CHARS


def test_a_flood_of_unique_owners_and_namespaces_keeps_memory_bounded() -> None:
    clock = Clock()
    events = OwnerEvents(lambda body: None, clock=clock)
    for i in range(20000):
        clock.now += 10  # refills every bucket, so every offer passes the limits and is remembered
        events.offer(request(f"ns-{i}", owner={**RS, "uid": f"u-{i}"}), "denied", (), f"m{i}")
    assert len(events._seen) <= ownerevents.MAX_REMEMBERED
    assert len(events._buckets) <= ownerevents.MAX_NAMESPACES
    assert events._queue.qsize() <= ownerevents.QUEUE_SIZE


def test_a_stalled_api_server_never_blocks_offer() -> None:
    release = threading.Event()

    def stall(body: dict[str, Any]) -> None:
        release.wait(10)

    clock = Clock()
    events = OwnerEvents(stall, clock=clock)
    events.start()
    try:
        started = time.monotonic()
        for i in range(2000):
            clock.now += 10
            events.offer(request(f"ns-{i}"), "denied", (), "m")
        assert time.monotonic() - started < 2
        assert events.counts["dropped"] > 0
    finally:
        release.set()
        events.stop()


def test_a_forwarded_for_header_cannot_pose_as_the_api_server(tmp_path: Any) -> None:
    """The peer address decides whether a review becomes an Event: uvicorn must not take it from
    X-Forwarded-For (its default trusts that header from 127.0.0.1, or from anyone with FORWARDED_ALLOW_IPS=*)."""
    from fastapi import FastAPI

    from webhook.edge.server import server_config

    config = server_config(
        FastAPI(),
        host="127.0.0.1",
        port=0,
        cert_file=tmp_path / "c",
        key_file=tmp_path / "k",
        log_level="warning",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=1,
    )
    assert config.proxy_headers is False


def test_an_api_server_answering_403_forever_is_logged_a_few_times_not_once_per_event(caplog: Any) -> None:
    class Forbidden(Exception):
        status = 403

    def refuse(body: dict[str, Any]) -> None:
        raise Forbidden()

    clock = Clock()
    events = OwnerEvents(refuse, clock=clock)
    with caplog.at_level("WARNING", logger="ferry.webhook.events"):
        for i in range(2000):
            clock.now += 10
            events.offer(request(f"ns-{i % 500}"), "denied", (), f"m{i}")
            events.drain()
    assert events.counts["failed"] == 2000
    assert len(caplog.records) <= 16
