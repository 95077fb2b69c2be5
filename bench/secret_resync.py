"""What one drift-repair resync of secretObjects costs the sidecar: requests, CPU and time per Secret.

Why it exists: the sidecar re-applies its Kubernetes Secrets on a schedule
(FERRY_SECRET_RESYNC_SECONDS, default 300 s) so a Secret deleted or edited by
hand is repaired. That schedule is chosen by this cost, which an unchanged
refresh (budget: 3 ms of CPU) cannot carry every cycle.

How: a real kube-apiserver (KUBEBUILDER_ASSETS) on loopback; a namespace, a
ServiceAccount bound to the Role `fetcher role` prints, a pod as owner; then
the fetcher's own client and `sync_secrets` exactly as the sidecar calls them.
After one first sync (creation), each resync of unchanged Secrets is timed:
CPU of this process (`time.process_time`: the fetcher's side only, the API
server runs elsewhere) and wall time. Requests are counted at the client.

Run: KUBEBUILDER_ASSETS=... python -m bench.secret_resync [--rounds 50] [--secrets 1,5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from devcluster.controlplane import start_control_plane
from fetcher.kube import KubeClient
from fetcher.secret_sync import PodOwner, build_secret_manifests, parse_secret_objects, secret_sync_rbac, sync_secrets
from tests.support.secretlib import AdminApi


class CountingClient(KubeClient):
    requests: list[str]

    def request(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(method)
        return super().request(method, *args, **kwargs)


def measure(api: AdminApi, secrets: int, rounds: int, folder: Path) -> dict[str, float]:
    namespace = api.new_namespace("bench")
    token = api.service_account_token(namespace, "app")
    names = [f"db-{index}" for index in range(secrets)]
    for document in secret_sync_rbac(namespace, "app", names, spc_name="bench"):
        kind = document["kind"].lower() + "s"
        api.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{kind}", document)
    pod = api.admin(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app"}]},
        },
    )
    owner = PodOwner("web", pod["metadata"]["uid"], namespace)
    token_file = folder / f"token-{secrets}"
    token_file.write_text(token)
    client = CountingClient(api.host, api.port, api.ssl_context(), str(token_file))
    object.__setattr__(client, "requests", [])
    raw = [{"secretName": name, "type": "Opaque", "data": [{"objectName": "pw", "key": "password"}]} for name in names]
    manifests = build_secret_manifests(parse_secret_objects(raw), {"pw": b"value"}, owner)
    sync_secrets(client, manifests, owner)  # creation
    client.requests.clear()
    cpu_ms, wall_ms = [], []
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        sync_secrets(client, manifests, owner)
        cpu_ms.append((time.process_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
    return {
        "secrets": secrets,
        "requests_per_resync": len(client.requests) / rounds,
        "cpu_ms_median": statistics.median(cpu_ms),
        "cpu_ms_p90": statistics.quantiles(cpu_ms, n=10)[-1],
        "wall_ms_median": statistics.median(wall_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--secrets", default="1,5")
    args = parser.parse_args()
    plane = start_control_plane(os.environ["KUBEBUILDER_ASSETS"])
    try:
        api = AdminApi(plane)
        with tempfile.TemporaryDirectory() as folder:
            print(f"load average at start: {os.getloadavg()[0]:.2f}")
            for count in (int(text) for text in args.secrets.split(",")):
                result = measure(api, count, args.rounds, Path(folder))
                print(
                    f"{result['secrets']:.0f} Secret(s): {result['requests_per_resync']:.1f} requests per resync, "
                    f"CPU {result['cpu_ms_median']:.1f} ms median ({result['cpu_ms_p90']:.1f} ms p90), "
                    f"wall {result['wall_ms_median']:.1f} ms median"
                )
            print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
