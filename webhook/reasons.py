"""Every reason Ferry gives for denying a pod, in one list.

A denial's reason is the `reason` label of `ferry_admission_denied_total`, a field of the admission log line and a
section of docs/troubleshooting.md; the policy writes these strings where it denies, and
tests/docs/test_troubleshooting.py fails when the code, this list and the docs disagree.
"""

from __future__ import annotations

DENIAL_REASONS: dict[str, str] = {
    "unknown-annotation": "a ferry.dev/ key Ferry does not know (a typo)",
    "invalid-annotation": "ferry.dev/inject is not true/false, or ferry.dev/status was written by hand",
    "conflicting-sources": "a SecretProviderClass and inline objects together, or secret-objects with a class",
    "no-objects": "opted in, but no secrets named",
    "invalid-spec": "the objects, region, refresh interval, mount path, containers or notify settings are invalid",
    "missing-secret-provider-class": "the named SecretProviderClass is not in the pod's namespace",
    "secret-provider-class-too-large": "the SecretProviderClass is larger than Ferry keeps in memory",
    "too-many-containers": "the pod has more containers than Ferry accepts",
    "invalid-pod": "a field of the pod is not of its schema's JSON type (only a forged review can send one)",
    "not-linux": "spec.os.name is not linux (the fetcher image is Linux-only)",
    "limit-range": "Ferry's containers do not fit the namespace's LimitRange",
    "platform-sizing": (
        "Ferry would raise the pod's Fargate size (with FERRY_FARGATE_OVERSIZE=deny), "
        "or a later webhook stripped its native sidecar"
    ),
    "not-ready": "the webhook has not finished reading namespaces and classes yet",
}
