"""Which cloud serves a spec: the one dispatch between the AWS sources and the GCP one.

One image serves both clouds and a pod pays only for its own: each side is imported here when its spec asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from fetcher.contract import FetchSpec
from fetcher.errors import ConfigError
from fetcher.values import FetchResult, VersionProbe

if TYPE_CHECKING:
    from fetcher.aws import AwsClients
    from fetcher.gcp import GcpClients

Clients: TypeAlias = "AwsClients | GcpClients"


def clients_from_env(spec: FetchSpec, env: Mapping[str, str]) -> Clients:
    """The spec's cloud client, configured from the process environment (one per process)."""
    if spec.provider == "gcp":
        from fetcher.gcp import GcpClients

        return GcpClients.from_env(spec, env)
    from fetcher.aws import AwsClients

    return AwsClients.from_env(env, pinned=pinned_endpoints(spec))


def pinned_endpoints(spec: FetchSpec) -> dict[tuple[str, str], str]:
    """The pod's own endpoints (ferry.dev/aws-endpoints) apply in its primary region."""
    return {(service, spec.region): url for service, url in spec.endpoints}


def fetch_all(spec: FetchSpec, clients: Clients, indices: Iterable[int] | None = None) -> FetchResult:
    """Every object of the spec (or only `indices`), from its cloud."""
    if spec.provider == "gcp":
        from fetcher.gcp import GcpClients
        from fetcher.gcp_source import fetch_all as fetch_gcp

        assert isinstance(clients, GcpClients)
        return fetch_gcp(spec, clients, indices)
    from fetcher.aws import AwsClients
    from fetcher.sources import fetch_all as fetch_aws

    assert isinstance(clients, AwsClients)
    return fetch_aws(spec, clients, indices)


def check_versions(spec: FetchSpec, clients: Clients, *, max_workers: int) -> list[VersionProbe]:
    """The cheap version checks of the sidecar's refresh, from the spec's cloud."""
    if spec.provider == "gcp":
        from fetcher.gcp import GcpClients
        from fetcher.gcp_source import check_versions as check_gcp

        assert isinstance(clients, GcpClients)
        return check_gcp(spec, clients, max_workers=max_workers)
    from fetcher.aws import AwsClients
    from fetcher.sources import check_versions as check_aws

    assert isinstance(clients, AwsClients)
    return check_aws(spec, clients, max_workers=max_workers)


def refuse_outside_a_pod(manifest: Mapping[str, Any], origin: str) -> Mapping[str, Any]:
    """The class, if `once` can fetch it on a laptop: a gcp class needs a pod's Workload Identity token."""
    spec = manifest.get("spec")
    if isinstance(spec, Mapping) and spec.get("provider") == "gcp":
        raise ConfigError(
            f"{origin} is a provider: gcp class; `once` fetches from AWS only (a laptop has no pod token for "
            "Workload Identity). Check the class with `python -m webhook inject`, and fetch from a pod"
        )
    return manifest
