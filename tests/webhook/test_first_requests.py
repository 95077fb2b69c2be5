"""A new connection's first request waits behind requests on connections answered before (edge.firstrequests)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.webhook.conftest import load_review
from webhook.edge.app import create_app
from webhook.edge.firstrequests import CONNECTION_STATE_KEY, FirstRequests, is_first_request
from webhook.settings import Settings


class _Connection:
    def __init__(self, answered: int) -> None:
        self.answered = answered


def _scope(first: bool) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/mutate",
        "raw_path": b"/mutate",
        "query_string": b"timeout=5s",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8443),
        "state": {CONNECTION_STATE_KEY: _Connection(0 if first else 3)},
    }


async def _post(app: Any, body: bytes, first: bool, done: list[str], name: str) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.append(name)

    await app(_scope(first), receive, send)
    assert status == [200]


def test_a_request_on_a_served_connection_goes_ahead_of_a_burst_of_first_requests(cluster: Any) -> None:
    """50 first requests (a burst of new connections) become ready before one request on a connection that was
    answered before: that one is answered among the first few, not after the whole burst.

    Before: each admission ran to its end in the order the requests became ready, so it was answered last.
    """
    app = create_app(Settings(), cluster, native_sidecars=True)
    review = load_review("review-1-ferry-first-call")
    bodies = []
    for number in range(51):
        review["request"]["uid"] = f"uid-{number}"
        review["request"]["object"]["metadata"]["name"] = f"pod-{number}"
        bodies.append(json.dumps(review).encode())
    done: list[str] = []

    async def main() -> None:
        burst = [_post(app, bodies[n], True, done, f"new-{n}") for n in range(50)]
        await asyncio.gather(*burst, _post(app, bodies[50], False, done, "served"))

    asyncio.run(main())
    assert len(done) == 51
    assert done.index("served") <= 2, done[:5]


def test_first_requests_go_one_per_loop_turn_in_arrival_order() -> None:
    lane = FirstRequests()
    order: list[int] = []
    turns = 0

    async def waiter(number: int) -> None:
        await lane.turn()
        order.append(number)

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    async def main() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        await asyncio.gather(*(waiter(n) for n in range(20)))
        stop.set()
        await tick

    asyncio.run(main())
    assert order == list(range(20))
    assert turns >= 20, "one first request per turn of the loop, not all at once"
    assert lane.waiting == 0


def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    lane = FirstRequests()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await lane.turn()
        order.append(name)

    async def main() -> None:
        first = asyncio.create_task(waiter("gone"))
        second = asyncio.create_task(waiter("next"))
        await asyncio.sleep(0)  # both wait now
        first.cancel()
        await asyncio.gather(first, second, return_exceptions=True)

    asyncio.run(main())
    assert order == ["next"]


def test_only_a_connection_that_says_it_answered_nothing_is_first() -> None:
    assert is_first_request({"state": {CONNECTION_STATE_KEY: _Connection(0)}})
    assert not is_first_request({"state": {CONNECTION_STATE_KEY: _Connection(1)}})
    assert not is_first_request({"state": {}})  # served without the guarded protocol (tests, other servers)
    assert not is_first_request({})
