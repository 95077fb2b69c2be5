"""The cost of the worst admission bodies a tenant can send, next to an ordinary pod's, in one process.

Why it exists: admission runs on the server's one event loop, so the CPU one
request takes is time every other request waits (issue 10, item 3: 90,000
unknown `ferry.dev/*` keys once cost 4 s, and a normal admission behind them
waited 6.4 s). This script times `AdmissionHandler.handle` (bytes in, bytes
out: the JSON parse, the policy and the encoded answer, exactly what
`POST /mutate` runs) for each hostile body under the 3 MiB body cap, next to an
ordinary pod, alternating ABBA, and records the slowest time, the answer's size
and the process's peak RSS. The budget is that no body costs more than a small
fraction of the API server's webhook timeout (10 s in the manifests), so one
request cannot push the others past it; the HTTP-level run with concurrent
legitimate traffic is bench/hostile_tenant.py's.

Run: .venv/bin/python -m bench.hostile_bodies [--rounds N]
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from typing import Any

from bench.benchlib import announce_machine, argument_parser, write_results
from tests.support.reviews import pod_create_review
from webhook.edge.app import AdmissionHandler
from webhook.edge.metrics import AdmissionMetrics
from webhook.policy.view import StaticView
from webhook.settings import Settings

OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'
BODY_CAP = Settings().max_request_bytes
# A denial or answer must stay small whatever the request held.
ANSWER_BUDGET_BYTES = 8 * 1024
# No single request may hold the event loop for more than this (a tenth of the webhook timeout).
CPU_BUDGET_SECONDS = 1.0


def _pod(annotations: dict[str, str], containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "annotations": annotations},
        "spec": {"containers": containers or [{"name": "app", "image": "registry.example.com/app:1"}]},
    }


def _fill(make: Callable[[int], dict[str, Any]]) -> bytes:
    """The largest body `make(n)` gives under the body cap (n found by doubling, then bisection)."""

    def body(n: int) -> bytes:
        return json.dumps(pod_create_review(make(n), namespace="team-a", uid="u")).encode()

    low, high = 1, 2
    while len(body(high)) <= BODY_CAP:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if len(body(middle)) <= BODY_CAP else (low, middle)
    return body(low)


def hostile_bodies() -> dict[str, bytes]:
    base = {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS}
    long_containers = [{"name": f"c{i:03d}-" + "x" * 56, "image": "i"} for i in range(250)]
    return {
        "ordinary pod": json.dumps(pod_create_review(_pod(base), namespace="team-a", uid="u")).encode(),
        "unknown ferry.dev/ keys": _fill(lambda n: _pod({**base, **{f"ferry.dev/typo-{i}": "" for i in range(n)}})),
        "250 long containers x unknown names": _fill(
            lambda n: _pod(
                {**base, "ferry.dev/containers": ",".join(f"nope{i}-" + "y" * 50 for i in range(n))},
                long_containers,
            )
        ),
        "one huge unknown key": _fill(lambda n: _pod({**base, "ferry.dev/" + "z" * n: ""})),
        "huge mount path": _fill(lambda n: _pod({**base, "ferry.dev/mount-path": "x" * n})),
        "200 invalid objects": json.dumps(
            pod_create_review(
                _pod(
                    {
                        "ferry.dev/inject": "true",
                        "ferry.dev/objects": "".join(
                            f"- objectName: 'bad {i} '\n  objectType: nonsense\n" for i in range(200)
                        ),
                    }
                ),
                namespace="team-a",
                uid="u",
            )
        ).encode(),
    }


def main() -> int:
    parser = argument_parser(__doc__, quiet=False)
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds per body (default 3)")
    args = parser.parse_args()
    machine = announce_machine()
    handler = AdmissionHandler(Settings(default_region="eu-west-1"), StaticView(), True, AdmissionMetrics())
    bodies = hostile_bodies()
    baseline = bodies.pop("ordinary pod")
    results: dict[str, Any] = {}
    for name, body in bodies.items():
        times: dict[str, list[float]] = {"ordinary": [], "hostile": []}
        size = 0
        for _ in range(args.rounds):
            for which in ("ordinary", "hostile", "hostile", "ordinary"):
                handler.memo = type(handler.memo)()  # every admission does the full work
                started = time.perf_counter()
                status, answer = handler.handle(baseline if which == "ordinary" else body)
                times[which].append(time.perf_counter() - started)
                if which == "hostile":
                    size = len(answer)
        worst = max(times["hostile"])
        results[name] = {
            "body_bytes": len(body),
            "answer_bytes": size,
            "worst_ms": round(worst * 1000, 2),
            "ordinary_worst_ms": round(max(times["ordinary"]) * 1000, 3),
            "within_budget": worst <= CPU_BUDGET_SECONDS and size <= ANSWER_BUDGET_BYTES,
        }
        print(
            f"{name:40s} body {len(body) / 1024:7.0f} KiB  answer {size:5d} B  worst {worst * 1000:8.1f} ms  "
            f"(ordinary pod {max(times['ordinary']) * 1000:.2f} ms)"
        )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_rss_mb:.0f} MB")
    path = write_results(
        "hostile_bodies",
        {
            "machine": machine,
            "budget": {"cpu_seconds": CPU_BUDGET_SECONDS, "answer_bytes": ANSWER_BUDGET_BYTES},
            "bodies": results,
            "peak_rss_mb": round(peak_rss_mb),
        },
        args.out_dir,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
