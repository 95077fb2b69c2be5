"""The requests the webhook benchmarks send: a realistic pod review, replicas of it, and unique pods."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

import yaml

from bench import benchlib

LATENCY_BUDGET_P99_MS = 5.0
THROUGHPUT_BUDGET_RATIO = 0.70
KUBE_CALLS_BUDGET = 0
UID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
STAGES = ("breakdown", "latency", "throughput", "kube-calls")
# What is timed, side by side: /mutate with identical pods, /mutate with a different pod each time, /noop.
ENDPOINTS = ("replicas", "unique", "noop")
CASES = ("replicas", "unique")  # the /mutate cases, each compared with /noop
SEQUENCE = ("replicas", "unique", "noop", "noop", "unique", "replicas")  # ABCCBA
PATHS = {"replicas": "/mutate?timeout=5s", "unique": "/mutate?timeout=5s", "noop": "/noop?timeout=5s"}
LABELS = {"replicas": "/mutate replicas", "unique": "/mutate unique pods", "noop": "/noop"}
HASH_LABEL = "pod-template-hash"
HASH_PLACEHOLDER = "hhhhhhhhhh"  # 10 characters, like a real pod-template-hash; every body has the same length
REPLICA_HASH = "5d8f7c9b6a"
# managedFields[].time: the API server stamps each replica with the second it was created.
TIME_PLACEHOLDER = "0000-00-00T00:00:00Z"
RECORDED_AT = 1795420939  # 2026-11-23T08:02:19Z, the fixture's managedFields time
SPC_NAME = "bench-app"
NAMESPACE = "team-a"

# Ten objects, as a team migrating from the CSI driver would list them: secrets
# (two read through jmesPath), a pinned version, and SSM parameters.
OBJECTS: list[dict[str, Any]] = [
    {
        "objectName": "prod/api/db",
        "objectType": "secretsmanager",
        "jmesPath": [
            {"path": "username", "objectAlias": "db-user"},
            {"path": "password", "objectAlias": "db-password"},
        ],
    },
    {"objectName": "prod/api/stripe-key", "objectType": "secretsmanager", "objectAlias": "stripe-key"},
    {"objectName": "prod/api/jwt-signing", "objectType": "secretsmanager", "objectVersionLabel": "AWSCURRENT"},
    {
        "objectName": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api/oauth-AbCdEf",
        "objectAlias": "oauth",
        "jmesPath": [
            {"path": "client_id", "objectAlias": "oauth-client-id"},
            {"path": "client_secret", "objectAlias": "oauth-client-secret", "filePermission": "0400"},
        ],
    },
    {
        "objectName": "prod/api/tls",
        "objectType": "secretsmanager",
        "objectAlias": "tls.pem",
        "objectVersion": "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
    },
    {"objectName": "prod/shared/sentry-dsn", "objectType": "secretsmanager", "objectAlias": "sentry-dsn"},
    {"objectName": "/prod/api/feature-flags", "objectType": "ssmparameter"},
    {"objectName": "/prod/api/rate-limits", "objectType": "ssmparameter", "objectAlias": "rate-limits.json"},
    {"objectName": "/prod/shared/endpoints", "objectType": "ssmparameter", "objectAlias": "endpoints"},
    {"objectName": "/prod/api/log-level", "objectType": "ssmparameter", "objectAlias": "log-level"},
]


# --- The request --------------------------------------------------------------------


def realistic_review(source: str) -> dict[str, Any]:
    """The AdmissionReview a real v1.28 API server sent for an annotated pod, grown to 3 containers, 10 objects."""
    review: dict[str, Any] = json.loads(
        (benchlib.FIXTURES / "admission" / "review-1-ferry-first-call.json").read_text()
    )
    request = review["request"]
    request["uid"] = UID_PLACEHOLDER
    pod = request["object"]
    third = copy.deepcopy(pod["spec"]["containers"][1])
    third.update(
        name="proxy", image="registry.example.com/envoy:1.30", ports=[{"containerPort": 9901, "protocol": "TCP"}]
    )
    pod["spec"]["containers"].append(third)
    # A different pod is another Deployment or a rollout: a new pod-template-hash and a new image.
    pod["metadata"].setdefault("labels", {})[HASH_LABEL] = HASH_PLACEHOLDER
    pod["spec"]["containers"][0]["image"] += f"-{HASH_PLACEHOLDER}"
    for entry in pod["metadata"].get("managedFields") or []:
        entry["time"] = TIME_PLACEHOLDER
    annotations = pod["metadata"]["annotations"]
    annotations.pop("ferry.dev/secret-provider-class", None)
    annotations.update(
        {"ferry.dev/inject": "true", "ferry.dev/refresh-interval": "5m", "ferry.dev/region": "us-east-1"}
    )
    if source == "inline":
        annotations["ferry.dev/objects"] = yaml.safe_dump(OBJECTS, sort_keys=False)
    else:
        annotations["ferry.dev/secret-provider-class"] = SPC_NAME
    return review


def bench_spc() -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": SPC_NAME, "namespace": NAMESPACE},
        "spec": {"provider": "aws", "parameters": {"objects": yaml.safe_dump(OBJECTS, sort_keys=False)}},
    }


def request_head(path: str, port: int, length: int) -> bytes:
    """Headers as the API server sends them (admission/request-headers.txt)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-apiserver-admission\r\n"
        f"Content-Length: {length}\r\nAccept: application/json, */*\r\nContent-Type: application/json\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    ).encode()


def unique_pool_default() -> int:
    """4x the memo's capacity: with LRU eviction and the bodies used in rotation, every request is a miss."""
    try:
        from webhook.policy.memo import MAX_ENTRIES
    except ImportError:  # no memo: any pool size gives misses
        return 2048
    return 4 * int(MAX_ENTRIES)


def request_bodies(review: dict[str, Any], unique_pool: int) -> dict[str, list[bytes]]:
    """The bodies of each endpoint, built before timing, all of the same length (uid still the placeholder).

    "replicas" and "noop": one body, the same pod every time. "unique": `unique_pool` bodies whose pods
    differ in their pod-template-hash label and their first container's image (the admission work is the
    same; the memo key is not). `instance` fills in each request's uid and managedFields time.
    """
    template = json.dumps(review, separators=(",", ":"))
    if template.count(HASH_PLACEHOLDER) != 2 or TIME_PLACEHOLDER not in template:
        raise RuntimeError("the request template must carry the hash placeholder twice and the time placeholder")
    replica = template.replace(HASH_PLACEHOLDER, REPLICA_HASH).encode()
    unique = [template.replace(HASH_PLACEHOLDER, f"{i:010x}").encode() for i in range(unique_pool)]
    return {"replicas": [replica], "unique": unique, "noop": [replica]}


def instance(template: bytes, second: int | None = None) -> bytes:
    """One request from a body template: a fresh uid, and managedFields stamped with a time.

    The time is now (to the second, as the API server writes it), or `second` seconds after the fixture's
    recording, for bodies written ahead of time; either way replicas' bodies differ as they do in a cluster.
    """
    stamp = time.gmtime(time.time() if second is None else RECORDED_AT + second)
    return template.replace(UID_PLACEHOLDER.encode(), str(uuid.uuid4()).encode(), 1).replace(
        TIME_PLACEHOLDER.encode(), time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp).encode()
    )


class Payloads:
    """Pre-encoded requests: each endpoint's bodies in rotation, a fresh uid each (one length, so one head)."""

    def __init__(self, bodies: dict[str, list[bytes]], port: int) -> None:
        self.bodies = bodies
        self.next = dict.fromkeys(bodies, 0)
        self.heads = {name: request_head(PATHS[name], port, len(pool[0])) for name, pool in bodies.items()}

    def make(self, endpoint: str) -> bytes:
        pool = self.bodies[endpoint]
        index = self.next[endpoint]
        self.next[endpoint] = (index + 1) % len(pool)
        return self.heads[endpoint] + instance(pool[index])


def memo_rotation_check(bodies: dict[str, list[bytes]], requests: int) -> dict[str, Any]:
    """Feed each case's rotation, with fresh uids, through the webhook's own memo: replicas hit, unique pods miss."""
    try:
        from webhook.policy.memo import MAX_ENTRIES, AdmissionMemo, pod_key
    except ImportError as exc:
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = {"available": True, "memo_max_entries": MAX_ENTRIES, "requests": requests}
    for case in CASES:
        memo: AdmissionMemo[bool] = AdmissionMemo()
        pool = bodies[case]
        for i in range(requests):
            request = json.loads(instance(pool[i % len(pool)], second=i))["request"]
            key = pod_key(request["object"], request["namespace"], None)
            if memo.recall(key, None, lambda namespace, name: None) is None:
                memo.remember(key, True, None, {})
        result[case] = {"pool": len(pool), "hits": memo.hits, "misses": memo.misses}
    result["ok"] = result["replicas"]["misses"] == 1 and result["unique"]["hits"] == 0
    return result
