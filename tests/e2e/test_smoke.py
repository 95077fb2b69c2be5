"""Smoke."""

from tests.e2e.ferrylib import inline_objects, pod


def test_inject(serving_ferry):
    ns = serving_ferry.create_namespace("smoke")
    stored = serving_ferry.create_pod(
        ns,
        pod(
            "p",
            annotations={
                "ferry.dev/inject": "true",
                "ferry.dev/region": "us-east-1",
                "ferry.dev/objects": inline_objects("db"),
            },
        ),
    )
    print(stored["spec"]["initContainers"])
    assert stored["metadata"]["annotations"]["ferry.dev/status"] == "injected"
