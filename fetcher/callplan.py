"""Which source serves which objects, and the calls a fetch plans: one answer for `fetch_all` and the simulator.

The fleet simulator (bench/fleet_sim.py) and the docs count the very units `fetch_all` runs, without running them.
"""

from __future__ import annotations

from collections.abc import Sequence

from fetcher.aws import AwsClients
from fetcher.contract import FetchSpec, ObjectType
from fetcher.contract.object_options import AssumeRole
from fetcher.discovery import DiscoverySource
from fetcher.sources import IndexedObject, Source, _select, source_for

# The call each unit makes: (service, operation); a discovery's first page (more pages add more).
FETCH_CALLS: dict[tuple[ObjectType, bool], tuple[str, str]] = {
    ("secretsmanager", False): ("secretsmanager", "GetSecretValue"),
    ("ssmparameter", False): ("ssm", "GetParameters"),
    ("secretsmanager", True): ("secretsmanager", "BatchGetSecretValue"),
    ("ssmparameter", True): ("ssm", "GetParametersByPath"),
}


def sources_of(
    spec: FetchSpec, clients: AwsClients, items: Sequence[IndexedObject]
) -> list[tuple[Source, list[IndexedObject]]]:
    """The objects grouped by what serves them: type, role (a role per object) and discovery."""
    grouped: dict[tuple[ObjectType, AssumeRole | None, bool], list[IndexedObject]] = {}
    for index, obj in items:
        grouped.setdefault((obj.object_type, obj.role, obj.discover is not None), []).append((index, obj))
    sources: list[tuple[Source, list[IndexedObject]]] = []
    for (object_type, role, discovery), group in grouped.items():
        signer = clients.roles.clients_for(role)
        source: Source = (
            DiscoverySource(signer, spec.region, object_type) if discovery else source_for(object_type, spec, signer)
        )
        sources.append((source, group))
    return sources


def planned_calls(spec: FetchSpec, clients: AwsClients) -> list[tuple[str, str]]:
    """(service, operation) of every unit `fetch_all` runs for this spec, from the same units (no call made)."""
    plan: list[tuple[str, str]] = []
    for source, items in sources_of(spec, clients, _select(spec, None)):
        first = items[0][1]
        plan.extend([FETCH_CALLS[(first.object_type, first.discover is not None)]] * len(source.fetch_units(items)))
    return plan
