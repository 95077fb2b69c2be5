"""The pod annotation keys Ferry reads and writes (the public contract: README, "Annotations").

The keys are a public interface, named in docs, manifests and error messages; one explicit list keeps them from
drifting apart.
"""

from __future__ import annotations

from collections.abc import Iterable

ANNOTATION_PREFIX = "ferry.dev/"
# "true"/"false": inject into this pod (pod value wins over the namespace's).
ANNOTATION_INJECT = "ferry.dev/inject"
# Name of a SecretProviderClass in the pod's namespace.
ANNOTATION_SECRET_PROVIDER_CLASS = "ferry.dev/secret-provider-class"
# ASCP `objects` YAML, inline on the pod.
ANNOTATION_OBJECTS = "ferry.dev/objects"
# The CSI driver's secretObjects as YAML, inline on the pod (with ferry.dev/objects; an SPC has its own).
ANNOTATION_SECRET_OBJECTS = "ferry.dev/secret-objects"
# Extra documents on the volume: "dotenv", "json" or both, comma-separated; each may be "format=file-name".
ANNOTATION_OUTPUT_FORMATS = "ferry.dev/output-formats"
# Primary AWS region.
ANNOTATION_REGION = "ferry.dev/region"
# Region asked when the primary fails with a 5xx, throttling or a network error.
ANNOTATION_FAILOVER_REGION = "ferry.dev/failover-region"
# ASCP pathTranslation: one character replacing "/" in file names, or "False".
ANNOTATION_PATH_TRANSLATION = "ferry.dev/path-translation"
# Absolute path of the volume in the app containers.
ANNOTATION_MOUNT_PATH = "ferry.dev/mount-path"
# Comma-separated app containers that get the mount (default: all).
ANNOTATION_CONTAINERS = "ferry.dev/containers"
# Refresh interval of the sidecar ("30s", "5m"); absent or "0": init only.
ANNOTATION_REFRESH_INTERVAL = "ferry.dev/refresh-interval"
# How long the sidecar's refreshes may fail without a break before its liveness probe fails ("10m"; "0": no probe).
ANNOTATION_SIDECAR_UNHEALTHY_AFTER = "ferry.dev/sidecar-unhealthy-after"
# Localhost URL the sidecar POSTs to after it swapped in new files.
ANNOTATION_NOTIFY_URL = "ferry.dev/notify-url"
# "SIGNAL:process-name": signal sent after a swap (needs shareProcessNamespace).
ANNOTATION_NOTIFY_SIGNAL = "ferry.dev/notify-signal"
# The pod's own AWS endpoints in its region: "secretsmanager=https://...,ssm=https://...,sts=https://..."
# (pod wins over namespace), each host within the webhook's FERRY_ENDPOINT_ALLOWED_HOSTS.
ANNOTATION_AWS_ENDPOINTS = "ferry.dev/aws-endpoints"
# "aws" (default) or "gcp": whose format ferry.dev/objects is in (gcp: the GCP provider's `secrets` list).
ANNOTATION_PROVIDER = "ferry.dev/provider"
# Google service account the pod's Workload Identity impersonates (pod, then namespace); unset: none.
ANNOTATION_GCP_SERVICE_ACCOUNT = "ferry.dev/gcp-service-account"
# Namespace only: the workload pool (PROJECT.svc.id.goog), over the webhook's FERRY_GCP_* settings.
ANNOTATION_GCP_WORKLOAD_POOL = "ferry.dev/gcp-workload-pool"
# Namespace only: the cluster's identity provider in that pool, over the webhook's FERRY_GCP_* settings.
ANNOTATION_GCP_IDENTITY_PROVIDER = "ferry.dev/gcp-identity-provider"
# Written by the webhook: "injected", so a pod is never injected twice.
ANNOTATION_STATUS = "ferry.dev/status"
STATUS_INJECTED = "injected"

# Every key Ferry reads or writes, in the order the README's annotation table lists them.
ANNOTATION_KEYS: tuple[str, ...] = (
    ANNOTATION_INJECT,
    ANNOTATION_SECRET_PROVIDER_CLASS,
    ANNOTATION_OBJECTS,
    ANNOTATION_SECRET_OBJECTS,
    ANNOTATION_OUTPUT_FORMATS,
    ANNOTATION_REGION,
    ANNOTATION_FAILOVER_REGION,
    ANNOTATION_PATH_TRANSLATION,
    ANNOTATION_MOUNT_PATH,
    ANNOTATION_CONTAINERS,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_SIDECAR_UNHEALTHY_AFTER,
    ANNOTATION_NOTIFY_URL,
    ANNOTATION_NOTIFY_SIGNAL,
    ANNOTATION_AWS_ENDPOINTS,
    ANNOTATION_PROVIDER,
    ANNOTATION_GCP_SERVICE_ACCOUNT,
    ANNOTATION_GCP_WORKLOAD_POOL,
    ANNOTATION_GCP_IDENTITY_PROVIDER,
    ANNOTATION_STATUS,
)


def iter_annotation_keys() -> Iterable[str]:
    """Every annotation key Ferry reads or writes (for docs and strict-key checks)."""
    return iter(ANNOTATION_KEYS)
