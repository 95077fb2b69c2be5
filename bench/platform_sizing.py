"""What fitting Ferry's requests to a pod's Fargate size costs an admission, measured side by side.

Why it exists: the sizing stage (`webhook.policy.sizing`) runs on every admission; on
pods bound for Fargate it computes the pod's size with and without Ferry. This
times `webhook.policy.admission.admit_pod` (the policy, no HTTP, no memo) for the same
Fargate-bound pod with the fitting on and off, and for a pod not bound for
Fargate, in ABC CBA order round by round so that the shared machine's drift
lands on all alike; the ratio of medians is the answer. Two hostile shapes are
timed beside them: a pod with pod-level resources (fitted on every admission),
and the worst pod a tenant can send for a fresh injection (256 containers, half
of them native sidecars, Fargate and pod-level resources at once).

    python -m bench.platform_sizing [--rounds 7] [--calls 2000]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import benchlib
from webhook.policy.decide import decide_injection
from webhook.policy.pipeline import admit_pod
from webhook.policy.platform import FARGATE_SCHEDULER
from webhook.policy.podshape import MAX_POD_CONTAINERS
from webhook.policy.request import PodRequest
from webhook.settings import Settings

OBJECTS = "".join(f'- objectName: "prod/s{i}"\n  objectType: secretsmanager\n' for i in range(10))


def _pod(fargate: bool) -> dict[str, Any]:
    app = {"name": "app", "image": "app:1", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}
    spec: dict[str, Any] = {"containers": [app, {**app, "name": "log"}, {**app, "name": "proxy"}]}
    if fargate:
        spec["schedulerName"] = FARGATE_SCHEDULER
    annotations = {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/refresh-interval": "5m"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": annotations}, "spec": spec}


def _pod_level(pod: dict[str, Any]) -> dict[str, Any]:
    pod["spec"]["resources"] = {"requests": {"cpu": "750m", "memory": "1536Mi"}}  # what the app requests: no room
    return pod


def _worst(pod: dict[str, Any]) -> dict[str, Any]:
    """The most containers a fresh injection takes, half of them native sidecars (the longest terms)."""
    app = {**pod["spec"]["containers"][0], "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}
    half = (MAX_POD_CONTAINERS - 3) // 2
    pod["spec"]["containers"] = [{**app, "name": f"app-{i}"} for i in range(half)]
    pod["spec"]["initContainers"] = [
        {**app, "name": f"init-{i}", **({"restartPolicy": "Always"} if i % 2 else {})} for i in range(half)
    ]
    pod["spec"]["resources"] = {"requests": {"cpu": "190m", "memory": "190Mi"}}  # about the app's: little room
    return pod


def _admission(pod: dict[str, Any], settings: Settings) -> Callable[[], object]:
    def call() -> object:
        request = PodRequest.read(pod, "team-a", None)
        return admit_pod(
            request,
            decide_injection(request, settings),
            spc_lookup=lambda ns, name: None,
            settings=settings,
            native_sidecars=True,
        )

    return call


def main() -> None:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    machine = benchlib.announce_machine()
    on = Settings(default_region="eu-west-1")
    cases = {
        "fargate, fitting on": _admission(_pod(True), on),
        "fargate, fitting off": _admission(_pod(True), Settings(default_region="eu-west-1", fargate_sizing="off")),
        "not fargate": _admission(_pod(False), on),
        "pod-level resources, no room": _admission(_pod_level(_pod(False)), on),
        "worst fresh pod (256 containers), fitting on": _admission(_worst(_pod(True)), on),
        "worst fresh pod (256 containers), fitting off": _admission(
            _worst(_pod(True)), Settings(default_region="eu-west-1", fargate_sizing="off")
        ),
    }
    load = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "platform sizing")
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]  # ABC CBA ...: drift lands on all alike
        for name in order:
            call = cases[name]
            for _ in range(200):
                call()  # warm-up
            started = time.perf_counter()
            for _ in range(args.calls):
                call()
            samples[name].append((time.perf_counter() - started) / args.calls * 1e6)
    load = benchlib.end_load(load)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians["fargate, fitting off"]
    rows = [(name, medians[name], benchlib.ratio(medians[name], baseline)) for name in names]
    print(benchlib.table(rows, ["case", "us per admission (median)", "vs fitting off"]))
    print(benchlib.describe_load(load))
    path = benchlib.write_results(
        "platform_sizing",
        {"machine": machine, "load": load, "rounds": args.rounds, "calls": args.calls, "us_per_admission": medians},
        args.out_dir,
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
