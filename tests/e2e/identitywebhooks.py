"""Two tiny mutating webhooks that stand in for EKS's identity webhooks.

Why it exists: on EKS the pod's AWS identity is added by another webhook (the
pod identity webhook for IRSA; the Pod Identity webhook for EKS Pod Identity),
before or after Ferry depending on configuration names. Ferry's containers
must end up with that identity exactly once. These servers add the same env
vars and projected token volumes as the real ones, over real TLS, so the API
server's reinvocation decides the order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devcluster import eksidentity
from devcluster.eksidentity import StandInWebhook

IRSA_TOKEN_DIR = eksidentity.TOKEN_DIR
POD_IDENTITY_TOKEN_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
ROLE_ARN = "arn:aws:iam::111122223333:role/e2e-app"


def _projected(volume: str, audience: str, path: str) -> dict[str, Any]:
    return {
        "name": volume,
        "projected": {
            "sources": [{"serviceAccountToken": {"audience": audience, "expirationSeconds": 86400, "path": path}}]
        },
    }


def add_irsa(pod: dict[str, Any]) -> None:
    """What the EKS pod identity webhook does for the suite's role: env + token mount in every container."""
    eksidentity.add_irsa(pod, ROLE_ARN)


def add_pod_identity(pod: dict[str, Any]) -> None:
    """What the Pod Identity webhook does, in the app containers only."""
    spec = pod["spec"]
    if not any(v.get("name") == "eks-pod-identity-token" for v in spec.get("volumes") or []):
        spec.setdefault("volumes", []).append(
            _projected("eks-pod-identity-token", "pods.eks.amazonaws.com", "eks-pod-identity-token")
        )
    for container in spec.get("containers") or []:
        env = container.setdefault("env", [])
        if any(e.get("name") == "AWS_CONTAINER_CREDENTIALS_FULL_URI" for e in env):
            continue
        env.extend(
            [
                {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"},
                {
                    "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "value": f"{POD_IDENTITY_TOKEN_DIR}/eks-pod-identity-token",
                },
            ]
        )
        container.setdefault("volumeMounts", []).append(
            {"name": "eks-pod-identity-token", "mountPath": POD_IDENTITY_TOKEN_DIR, "readOnly": True}
        )


class MutatingServer(StandInWebhook):
    """A stand-in webhook that applies `mutate` to each pod, whatever its namespace."""

    def __init__(self, mutate: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(lambda _namespace, pod: mutate(pod))

    def configuration(self, name: str, namespace_label: tuple[str, str]) -> dict[str, Any]:
        """A MutatingWebhookConfiguration for pods in namespaces carrying `namespace_label`."""
        key, value = namespace_label
        return self.registration(name, f"{name}.e2e.ferry.dev", "Fail", {"matchLabels": {key: value}})
