"""A rollout of thousands of pods against AWS's quotas, on a simulated clock: how long, how many throttles.

Why it exists: issue 18 part 5 asks what a fleet that starts at once costs, and a real test cannot
start 5,000 pods. This event simulation drives Ferry's OWN pieces, not copies of them: the call plan
(`fetcher.callplan.planned_calls`, from the same fetch units `fetch_all` runs), the client's retry policy
(`fetcher.retry.next_retry` with `AwsSettings().backoff()`) and the init container's start-up policy
(`fetcher.startup.startup_backoff`, `DEFAULT_STARTUP_DEADLINE`). Only AWS is modelled: a token bucket per
quota (burst = one second's worth), a fixed round trip, and a throttle answered at once.

ASCP is modelled from its source and the SDK defaults it uses: per mount, one call per object in order
(GetSecretValue per secret; GetParameters per 10 parameters), the AWS SDK for Go v1 default retryer
(3 retries; throttles wait 2^n x [0.5, 1) s), and a failed mount retried by the kubelet from 0.5 s,
doubling to 2 min 2 s.

Run: python -m bench.fleet_sim [--pods 5000 --objects 5 --seed 1]; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from fetcher.aws import AwsClients, AwsSettings
from fetcher.callplan import planned_calls
from fetcher.contract import FetchSpec, build_spec
from fetcher.retry import Backoff, next_retry
from fetcher.startup import DEFAULT_STARTUP_DEADLINE, startup_backoff

ROUND_TRIP = 0.030  # seconds, a call that succeeds
THROTTLE_REPLY = 0.010  # seconds, a throttled call
KUBELET_RESTART_BASE, KUBELET_RESTART_CAP = 10.0, 300.0  # CrashLoopBackOff
KUBELET_MOUNT_BASE, KUBELET_MOUNT_CAP = 0.5, 122.0  # a failed volume mount's retry
SIMULATION_LIMIT = 3600.0

# Published quotas per account and region (docs/aws-api-economics.md).
QUOTAS = {
    "GetSecretValue": 10_000.0,
    "DescribeSecret": 40_000.0,
    "BatchGetSecretValue": 100.0,
    "ssm": 40.0,  # GetParameter, GetParameters and GetParametersByPath share it
}
SSM_HIGH_THROUGHPUT = 3_000.0


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Outcome:
    ready_at: list[float] = field(default_factory=list)
    calls: int = 0
    throttles: int = 0
    restarts: int = 0
    never_ready: int = 0


class Simulation:
    def __init__(self, quotas: dict[str, float], seed: int) -> None:
        self.buckets = {name: TokenBucket(rate) for name, rate in quotas.items()}
        self.queue: list[tuple[float, int, Callable[[float], None]]] = []
        self.sequence = 0
        self.rng = random.Random(seed)
        self.outcome = Outcome()

    def at(self, when: float, action: Callable[[float], None]) -> None:
        self.sequence += 1
        heapq.heappush(self.queue, (when, self.sequence, action))

    def run(self) -> Outcome:
        while self.queue:
            when, _, action = heapq.heappop(self.queue)
            if when > SIMULATION_LIMIT:
                break
            action(when)
        return self.outcome

    def call(self, operation: str, now: float, done: Callable[[float, bool], None]) -> None:
        """One API call: `done(time, answered)` after the round trip (False: throttled)."""
        self.outcome.calls += 1
        bucket = self.buckets["ssm" if operation.startswith("GetParameter") else operation]
        if bucket.take(now):
            self.at(now + ROUND_TRIP, lambda t: done(t, True))
        else:
            self.outcome.throttles += 1
            self.at(now + THROTTLE_REPLY, lambda t: done(t, False))


class FerryPod:
    """Ferry's init container: every planned unit at once (the pool is wider than 5), each retried by the
    client's policy; a failed delivery retried whole by the start-up policy; past the deadline, a restart."""

    def __init__(self, sim: Simulation, plan: list[str], client: Backoff, startup: Backoff) -> None:
        self.sim, self.plan, self.client, self.startup = sim, plan, client, startup
        self.restarts = 0

    def start(self, now: float) -> None:
        self.started = now
        self.deliveries = 0
        self.deliver(now)

    def deliver(self, now: float) -> None:
        self.deliveries += 1
        self.pending = len(self.plan)
        self.failed = False
        for operation in self.plan:
            self.unit(operation, now, now, 1)

    def unit(self, operation: str, began: float, now: float, attempts: int) -> None:
        def done(t: float, answered: bool) -> None:
            if answered:
                return self.unit_done(t, failed=False)
            delay = next_retry(self.client, attempts, t - began, True, self.sim.rng.random)
            if delay is None:
                return self.unit_done(t, failed=True)
            self.sim.at(t + delay, lambda t2: self.unit(operation, began, t2, attempts + 1))

        self.sim.call(operation, now, done)

    def unit_done(self, now: float, failed: bool) -> None:
        self.failed |= failed
        self.pending -= 1
        if self.pending:
            return
        if not self.failed:
            self.sim.outcome.ready_at.append(now)
            return
        delay = next_retry(self.startup, self.deliveries, now - self.started, True, self.sim.rng.random)
        if delay is not None:
            self.sim.at(now + delay, self.deliver)
            return
        self.restarts += 1
        self.sim.outcome.restarts += 1
        wait = min(KUBELET_RESTART_CAP, KUBELET_RESTART_BASE * 2 ** (self.restarts - 1))
        self.sim.at(now + wait, self.start)


class AscpMount:
    """ASCP: the objects one after another; SDK v1 default retries; a failed mount retried by the kubelet."""

    MAX_RETRIES = 3

    def __init__(self, sim: Simulation, plan: list[str]) -> None:
        self.sim, self.plan = sim, plan
        self.mounts = 0

    def start(self, now: float) -> None:
        self.mounts += 1
        self.next_object(now, 0)

    def next_object(self, now: float, position: int) -> None:
        if position == len(self.plan):
            self.sim.outcome.ready_at.append(now)
            return
        self.attempt(now, position, 0)

    def attempt(self, now: float, position: int, retries: int) -> None:
        def done(t: float, answered: bool) -> None:
            if answered:
                return self.next_object(t, position + 1)
            if retries < self.MAX_RETRIES:
                delay = 2**retries * (0.5 + 0.5 * self.sim.rng.random())
                return self.sim.at(t + delay, lambda t2: self.attempt(t2, position, retries + 1))
            self.sim.outcome.restarts += 1
            wait = min(KUBELET_MOUNT_CAP, KUBELET_MOUNT_BASE * 2 ** (self.mounts - 1))
            self.sim.at(t + wait, self.start)

        self.sim.call(self.plan[position], now, done)


def ferry_plan(objects: int, object_type: str, discover: bool = False) -> list[str]:
    """Ferry's own plan for a pod: `objects` named objects, or one discovery that finds them (one page)."""
    named = [{"objectName": f"/app/{n}", "objectType": object_type} for n in range(objects)]
    found = [{"objectName": "/app/", "objectType": object_type, "discover": True}]
    spec: FetchSpec = build_spec(objects=found if discover else named, region="us-east-1")
    clients = AwsClients(environ={"AWS_ACCESS_KEY_ID": "simulated", "AWS_SECRET_ACCESS_KEY": "simulated"})
    try:
        return [operation for _, operation in planned_calls(spec, clients)]
    finally:
        clients.close()


def ascp_plan(objects: int, object_type: str) -> list[str]:
    if object_type == "secretsmanager":
        return ["GetSecretValue"] * objects
    return ["GetParameters"] * -(-objects // 10)


def simulate(
    who: str, pods: int, plan: list[str], quotas: dict[str, float], ramp: float, seed: int
) -> tuple[Outcome, float]:
    sim = Simulation(quotas, seed)
    client = AwsSettings().backoff()
    startup = startup_backoff(DEFAULT_STARTUP_DEADLINE)
    for number in range(pods):
        starter = FerryPod(sim, plan, client, startup) if who == "Ferry" else AscpMount(sim, plan)
        sim.at(ramp * number / pods, starter.start)
    outcome = sim.run()
    outcome.never_ready = pods - len(outcome.ready_at)
    return outcome, ramp


def row(label: str, who: str, outcome: Outcome, pods: int) -> str:
    ready = sorted(outcome.ready_at)
    if not ready:
        counts = f"{outcome.calls:,} | {outcome.throttles:,} | {outcome.restarts:,}"
        return f"| {label} | {who} | none ready | | | | {counts} |"
    pct = statistics.quantiles(ready, n=100) if len(ready) > 1 else [ready[0]] * 99
    return (
        f"| {label} | {who} | {ready[-1]:.2f} s | {pct[49]:.2f} s | {pct[89]:.2f} s | {pct[98]:.2f} s | "
        f"{outcome.calls:,} | {outcome.throttles:,} | {outcome.restarts:,}"
        + (f" ({outcome.never_ready} never ready)" if outcome.never_ready else "")
        + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sim")
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which the pods start (0: at once)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scenarios = [
        ("Secrets Manager, 10,000 TPS", "secretsmanager", QUOTAS, False),
        ("SSM, 40 TPS (default)", "ssmparameter", QUOTAS, False),
        ("SSM, higher throughput", "ssmparameter", {**QUOTAS, "ssm": SSM_HIGH_THROUGHPUT}, False),
        ("Secrets Manager discovery, BatchGetSecretValue 100 TPS", "secretsmanager", QUOTAS, True),
        ("SSM discovery, 40 TPS (default)", "ssmparameter", QUOTAS, True),
    ]
    print(f"{args.pods} pods x {args.objects} objects, starting over {args.ramp:g} s, seed {args.seed}\n")
    print("| quota | who | all ready | p50 | p90 | p99 | calls | throttled | failed inits / mounts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, object_type, quotas, discover in scenarios:
        plans = {"Ferry": ferry_plan(args.objects, object_type, discover)}
        if not discover:  # ASCP has no discovery
            plans["ASCP"] = ascp_plan(args.objects, object_type)
        for who, plan in plans.items():
            outcome, _ = simulate(who, args.pods, plan, quotas, args.ramp, args.seed)
            print(row(label, who, outcome, args.pods), flush=True)


if __name__ == "__main__":
    main()
