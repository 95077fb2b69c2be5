"""Stand-ins for the platform webhooks that rewrite a pod around Ferry: EKS Fargate's, and one that strips sidecars.

Why it exists: on EKS, the Fargate profile webhook sets `schedulerName:
fargate-scheduler` on every pod a Fargate profile selects, before or after
Ferry depending on configuration names; Ferry must size its containers for the
pod as Fargate will see it either way. Some webhooks rebuild init containers
and drop `restartPolicy: Always`, which would turn Ferry's native sidecar into
an init container that never exits. Both are served over real TLS by
`identitywebhooks.MutatingServer`, so the real API server's reinvocation
decides what Ferry sees.
"""

from __future__ import annotations

from typing import Any

from webhook.policy.platform import FARGATE_SCHEDULER


def bind_to_fargate(pod: dict[str, Any]) -> None:
    """What the EKS Fargate profile webhook does to a pod its profile selects."""
    pod["spec"]["schedulerName"] = FARGATE_SCHEDULER


def strip_restart_policy(pod: dict[str, Any]) -> None:
    """A careless webhook that rebuilds init containers from fields it knows, losing restartPolicy."""
    for container in pod["spec"].get("initContainers") or []:
        container.pop("restartPolicy", None)
