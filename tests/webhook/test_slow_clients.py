"""Slow and greedy clients against `python -m webhook serve` (issue 10, item 2).

Anyone who can reach the Service can open TLS connections to the admission
port. Before the guards, 60 connections that announced 3 MiB and stalled held
220 MB and were all still open a minute later. Now every request must arrive
whole within the server's read deadline, the bytes of bodies in flight are
bounded. The connection caps are tested in test_edge_gate.py. Each check waits a
bounded time for the server to act; none measures how fast it is.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest

from tests.support.reviews import decode_patch
from tests.support.served import ServedWebhook, closed_by_server, stalled_request
from webhook.edge.app import BodyBudget, create_app
from webhook.edge.server import REQUEST_READ_DEADLINE
from webhook.policy.view import StaticView
from webhook.settings import Settings

MiB = 1024 * 1024
ATTACKERS = 60
# Well past the read deadline, far short of "still open a minute later".
CLOSE_WITHIN = REQUEST_READ_DEADLINE + 12.0
# What 60 stalled 3 MiB bodies may add to the server's RSS: held whole, they would add 180 MiB and more
# (220 MB was measured before the guards); bounded, only the shared body budget and buffers remain.
RSS_GROWTH_LIMIT = 96 * MiB


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedWebhook]:
    with ServedWebhook(tmp_path_factory.mktemp("served")) as webhook:
        yield webhook


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _attack(served: ServedWebhook, *, send: int, headers_complete: bool = True) -> tuple[list[Any], int]:
    """Open ATTACKERS stalled connections at once; the open sockets and the server's peak RSS meanwhile."""
    assert served.process is not None
    context = served.client_context()
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [
            pool.submit(
                stalled_request,
                served.port,
                context,
                announce=3 * MiB,
                send=send,
                headers_complete=headers_complete,
            )
            for _ in range(ATTACKERS)
        ]
        peak = _rss(served.process.pid)
        while not all(f.done() for f in futures):
            peak = max(peak, _rss(served.process.pid))
            time.sleep(0.05)
    sockets = [f.result() for f in futures]
    return [s for s in sockets if s is not None], peak


def _still_admits(served: ServedWebhook, review: Any) -> None:
    with httpx.Client(verify=served.client_context(), timeout=10) as client:
        response = client.post(f"{served.url}/mutate?timeout=5s", content=json.dumps(review("review-1")))
    assert response.status_code == 200
    assert decode_patch(response.json()["response"])


def test_stalled_bodies_are_dropped_and_memory_stays_bounded(served: ServedWebhook, review: Any) -> None:
    """60 connections announce 3 MiB, send all but one byte, and stall: all dropped, RSS bounded."""
    assert served.process is not None
    baseline = _rss(served.process.pid)
    sockets, peak = _attack(served, send=3 * MiB - 1)
    with ThreadPoolExecutor(max_workers=len(sockets) or 1) as pool:
        closed = list(pool.map(lambda s: closed_by_server(s, CLOSE_WITHIN), sockets))
        for sock in sockets:
            peak = max(peak, _rss(served.process.pid))
            sock.close()
    assert all(closed), f"{closed.count(False)} of {len(sockets)} stalled connections still open"
    growth = peak - baseline
    assert growth <= RSS_GROWTH_LIMIT, f"server RSS grew by {growth / MiB:.0f} MiB (from {baseline / MiB:.0f} MiB)"
    assert served.process.poll() is None
    _still_admits(served, review)


def test_stalled_headers_are_dropped(served: ServedWebhook, review: Any) -> None:
    """60 connections that never finish their headers are dropped too."""
    sockets, _ = _attack(served, send=0, headers_complete=False)
    assert len(sockets) == ATTACKERS
    with ThreadPoolExecutor(max_workers=len(sockets)) as pool:
        closed = list(pool.map(lambda s: closed_by_server(s, CLOSE_WITHIN), sockets))
    for sock in sockets:
        sock.close()
    assert all(closed), f"{closed.count(False)} of {len(sockets)} stalled connections still open"
    _still_admits(served, review)


def test_a_keep_alive_connection_gets_a_fresh_deadline_per_request(served: ServedWebhook, review: Any) -> None:
    """The deadline covers one request at a time: a connection the API server reuses is not cut off."""
    with httpx.Client(verify=served.client_context(), timeout=10) as client:
        for _ in range(2):
            answer = client.post(f"{served.url}/mutate?timeout=5s", content=json.dumps(review("review-1")))
            assert answer.status_code == 200
            time.sleep(REQUEST_READ_DEADLINE / 2 + 0.5)  # idle past the deadline in all, within keep-alive
        answer = client.post(f"{served.url}/mutate?timeout=5s", content=json.dumps(review("review-1")))
        assert answer.status_code == 200
        assert client.get(f"{served.url}/healthz").status_code == 200


def test_bodies_past_the_shared_budget_get_503_and_small_ones_never_do(asgi_client: Any, review: Any) -> None:
    budget = BodyBudget(shared_bytes=1 * MiB, small_bytes=256 * 1024)
    app = create_app(Settings(), StaticView([]), native_sidecars=True, body_budget=budget)
    client = asgi_client(app)
    assert budget.take(1 * MiB)  # other large bodies in flight hold it all
    small = client.post("/mutate", content=json.dumps(review("review-1")))
    assert small.status_code == 200
    large = client.post("/mutate", content=b" " * (512 * 1024))
    assert large.status_code == 503 and "retry" in large.json()["message"]
    budget.give_back(1 * MiB)
    assert budget.in_use == 0
    large = client.post("/mutate", content=b" " * (512 * 1024))
    assert large.status_code == 400  # read whole, then found not to be a review
    assert budget.in_use == 0  # given back after reading


def test_large_bodies_are_admitted_off_the_event_loop_without_the_memo(
    asgi_client: Any, cluster: Any, review: Any
) -> None:
    """A body past SMALL_BODY_BYTES is answered the same, on the worker thread, and never memoized."""
    threads: list[str] = []
    lookup = cluster.namespace

    def recording(name: str) -> Any:
        threads.append(threading.current_thread().name)
        return lookup(name)

    cluster.namespace = recording
    budget = BodyBudget(shared_bytes=8 * MiB, small_bytes=1024)
    app = create_app(Settings(), cluster, native_sidecars=True, body_budget=budget)
    client = asgi_client(app)
    answer = client.post("/mutate", content=json.dumps(review("review-1")))
    assert answer.status_code == 200 and decode_patch(answer.json()["response"])
    assert threads and all(name.startswith("ferry-large-body") for name in threads)
    assert len(app.state.memo) == 0 and budget.in_use == 0
    small = create_app(Settings(), cluster, native_sidecars=True)
    threads.clear()
    assert asgi_client(small).post("/mutate", content=json.dumps(review("review-1"))).status_code == 200
    assert threads and not any(name.startswith("ferry-large-body") for name in threads)
    assert len(small.state.memo) == 1
