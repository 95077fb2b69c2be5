"""What owner Events add to an admission: `AdmissionHandler.handle` with and without them, A/B alternating.

Why it exists: warnings and denials become Events on the pod's owner
(webhook/ownerevents.py), and that must not slow admission: the handler only
queues, a background thread posts. This times the handler on a ReplicaSet's pod
that gets a warning (the case that makes an Event), in rounds that alternate
with and without Events, so machine noise hits both alike. The poster is a
no-op here: what is measured is the admission path, not the API call.
"""

from __future__ import annotations

import json
import statistics
import time

from bench.benchlib import announce_machine, argument_parser, write_results
from tests.support.reviews import pod_create_review
from webhook.app import AdmissionHandler
from webhook.metrics import AdmissionMetrics
from webhook.ownerevents import OwnerEvents
from webhook.settings import Settings
from webhook.view import StaticView

ROUNDS = 15
CALLS_PER_ROUND = 2000


def _review(i: int, distinct: bool) -> bytes:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c", "uid": "u-1", "controller": True}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c-",
            "ownerReferences": [owner],
            # Names secrets without opting in: admitted unchanged, with a warning (and an Event).
            "annotations": {"ferry.dev/secret-provider-class": f"db-{i}" if distinct else "db"},
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }
    return json.dumps(pod_create_review(pod, namespace="team-a", uid=f"u{i}")).encode()


def _time(handler: AdmissionHandler, bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        handler.handle(body)
    return (time.perf_counter() - started) / len(bodies) * 1e6


def main() -> None:
    argument_parser(__doc__, quiet=False).parse_args()
    machine = announce_machine()
    view = StaticView(namespaces=[{"metadata": {"name": "team-a"}}])
    results: dict[str, dict[str, float]] = {}
    for case, distinct in (("same warning (deduplicated)", False), ("distinct warnings (rate-limited)", True)):
        bodies = [_review(i, distinct) for i in range(CALLS_PER_ROUND)]
        without = AdmissionHandler(Settings(), view, True, AdmissionMetrics())
        events = OwnerEvents(lambda body: None)
        with_events = AdmissionHandler(Settings(), view, True, AdmissionMetrics(), events)
        a: list[float] = []
        b: list[float] = []
        for round_number in range(ROUNDS):
            # Which goes first alternates too, so neither always runs on a warmer cache.
            if round_number % 2:
                b.append(_time(with_events, bodies))
                a.append(_time(without, bodies))
            else:
                a.append(_time(without, bodies))
                b.append(_time(with_events, bodies))
            events.drain()
        requests = [json.loads(body)["request"] for body in bodies]
        alone = OwnerEvents(lambda body: None)
        started = time.perf_counter()
        for request in requests:
            alone.offer(
                request, "skipped", ("ferry.dev/secret-provider-class set but ferry.dev/inject is not true",), None
            )
        offer_us = (time.perf_counter() - started) / len(requests) * 1e6
        results[case] = {
            "without_us_median": statistics.median(a),
            "with_us_median": statistics.median(b),
            "ratio": statistics.median(b) / statistics.median(a),
            "offer_alone_us": offer_us,
        }
        print(
            f"{case}: {statistics.median(a):.1f} us without, {statistics.median(b):.1f} us with Events "
            f"(ratio {results[case]['ratio']:.3f}; {ROUNDS} alternating rounds of {CALLS_PER_ROUND}); "
            f"offer() alone {offer_us:.1f} us",
            flush=True,
        )
    write_results("owner_events", {"machine": machine, "results": results})


if __name__ == "__main__":
    main()
