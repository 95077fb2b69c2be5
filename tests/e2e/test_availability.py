"""Ferry's availability as the API server sees it: down, starting twice, and after an API server restart.

Why it exists: `failurePolicy: Fail` is only safe if Ferry is scoped to the
pods that asked, and self-managed TLS is only safe if replicas that start
together agree on one certificate. Watches must recover when the API server
goes away, or Ferry would judge pods against a stale view forever.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support.ferrylib import WEBHOOK_CONFIG, Ferry, Replica, is_injected, opted_pod, pod, spc, wait_for
from tests.support.reviews import pod_create_review


def test_webhook_down_refuses_opted_in_pods_and_creates_all_others(serving_ferry: Ferry) -> None:
    opted_ns = serving_ferry.create_namespace("down-opted", opted_in=True)
    plain_ns = serving_ferry.create_namespace("down-plain")
    serving_ferry.stop_all()
    with pytest.raises(ApiException) as refused:
        serving_ferry.create_pod(plain_ns, opted_pod("asks"))
    assert 'failed calling webhook "pods.ferry.dev"' in json.loads(refused.value.body)["message"]
    with pytest.raises(ApiException):
        serving_ferry.create_pod(opted_ns, opted_pod("in-opted-namespace"))
    # Everything that did not ask is created while Ferry is down, including opt-outs in opted-in namespaces.
    assert not is_injected(serving_ferry.create_pod(plain_ns, pod("plain")))
    assert not is_injected(serving_ferry.create_pod(opted_ns, pod("out", annotations={"ferry.dev/inject": "false"})))
    assert not is_injected(serving_ferry.create_pod("kube-system", pod(f"sys-{plain_ns}")))
    # A pod that names secrets without opting in reaches Ferry only to be warned (warn.pods.ferry.dev, Ignore):
    # it is created too (before issue 15 it went through pods.ferry.dev and was refused).
    forgot = pod("forgot", annotations={"ferry.dev/secret-provider-class": "db", "ferry.dev/region": "us-east-1"})
    assert not is_injected(serving_ferry.create_pod(plain_ns, forgot))
    serving_ferry.plane.kubectl("delete", "pod", f"sys-{plain_ns}", "-n", "kube-system", "--wait=false")


def _tls_secrets(ferry: Ferry) -> list[dict[str, Any]]:
    result = ferry.plane.kubectl("get", "secrets", "-n", ferry.namespace, "-o", "json")
    return [s for s in json.loads(result.stdout)["items"] if s["metadata"]["name"] == "ferry-webhook-tls"]


def test_two_replicas_starting_together_share_one_certificate(serving_ferry: Ferry) -> None:
    plane = serving_ferry.plane
    serving_ferry.stop_all()
    # An empty cluster: no TLS Secret, and the configuration as the manifests render it (no caBundle).
    plane.kubectl("delete", "secret", "ferry-webhook-tls", "-n", serving_ferry.namespace, "--ignore-not-found")
    config = next(d for d in serving_ferry.objects if d["kind"] == "MutatingWebhookConfiguration")
    plane.kubectl("replace", "-f", "-", input=yaml.safe_dump(config))
    assert serving_ferry.ca_bundle() is None
    first = serving_ferry.start_replica(wait=False)
    second = serving_ferry.start_replica(wait=False)
    serving_ferry.wait_serving(first)
    serving_ferry.wait_serving(second)
    secrets = _tls_secrets(serving_ferry)
    assert len(secrets) == 1
    assert serving_ferry.ca_bundle() == base64.b64decode(secrets[0]["data"]["ca.crt"])
    ns = serving_ferry.create_namespace("replicas")
    assert is_injected(serving_ferry.create_pod(ns, opted_pod("through-the-api-server")))
    # The API server keeps one connection open, so it may only ever talk to one replica: ask each
    # directly, trusting only the patched caBundle and checking the Service's DNS name.
    for replica in (first, second):
        review = pod_create_review(opted_pod(f"direct-{replica.port}"), namespace=ns, dryRun=True)
        answer = post_review(serving_ferry, replica, review)
        assert answer["response"]["allowed"] is True and answer["response"]["patchType"] == "JSONPatch"
    serving_ferry.stop_replica(second)


def post_review(ferry: Ferry, replica: Replica, review: dict[str, Any]) -> dict[str, Any]:
    bundle = ferry.ca_bundle()
    assert bundle is not None
    context = ssl.create_default_context(cadata=bundle.decode())
    host = f"ferry-webhook.{ferry.namespace}.svc"
    with socket.create_connection(("127.0.0.1", replica.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            body = json.dumps(review).encode()
            tls.sendall(
                f"POST /mutate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return dict(json.loads(payload))


def _spec_objects(stored: dict[str, Any]) -> list[str]:
    init = next(c for c in stored["spec"]["initContainers"] if c["name"] == "ferry-init")
    spec = json.loads(next(e["value"] for e in init["env"] if e["name"] == "FERRY_SPEC"))
    return [o["objectName"] for o in spec["objects"]]


def _dry_run(ferry: Ferry, ns: str, manifest: dict[str, Any]) -> Any:
    try:
        return ferry.create_pod(ns, manifest, dry_run=True)
    except ApiException as exc:
        return str(exc.body)


def spc_changes_reach_the_next_admission(ferry: Ferry, prefix: str) -> None:
    ns = ferry.create_namespace(prefix)
    manifest = pod("app", annotations={"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "live"})
    first = _dry_run(ferry, ns, manifest)
    assert isinstance(first, str) and "live" in first  # not there yet: denied, naming it
    ferry.apply(ns, [spc("live", "v1-secret")], check=True)
    wait_for(
        lambda: not isinstance(r := _dry_run(ferry, ns, manifest), str) and _spec_objects(r) == ["v1-secret"],
        30,
        what="the created SPC in the next admission",
    )
    ferry.apply(ns, [spc("live", "v2-secret")], check=True)
    wait_for(
        lambda: not isinstance(r := _dry_run(ferry, ns, manifest), str) and _spec_objects(r) == ["v2-secret"],
        30,
        what="the edited SPC in the next admission",
    )
    ferry.plane.kubectl("delete", "secretproviderclass", "live", "-n", ns)
    wait_for(lambda: isinstance(_dry_run(ferry, ns, manifest), str), 30, what="the deleted SPC to deny admission")


def test_spc_created_edited_deleted_after_start_changes_the_next_admission(serving_ferry: Ferry) -> None:
    spc_changes_reach_the_next_admission(serving_ferry, "spc-live")


def test_watches_recover_after_an_api_server_restart(serving_ferry: Ferry) -> None:
    serving_ferry.plane.restart_apiserver()
    spc_changes_reach_the_next_admission(serving_ferry, "after-restart")
    # And a namespace created after the restart is seen too (namespace opt-in).
    ns = serving_ferry.create_namespace(
        "ns-after-restart",
        labels={"ferry.dev/inject": "enabled"},
        annotations={"ferry.dev/inject": "true", "ferry.dev/region": "us-east-1"},
    )
    manifest = pod("app", annotations={"ferry.dev/objects": "- objectName: s\n  objectType: secretsmanager\n"})
    wait_for(
        lambda: not isinstance(r := _dry_run(serving_ferry, ns, manifest), str) and is_injected(r),
        30,
        what="namespace opt-in after restart",
    )
    assert WEBHOOK_CONFIG
