"""Forged pods whose fields are not of their schema's JSON type: a denial naming the field, never an internal error.

The API server decodes every pod into its typed schema before calling a webhook, so only a forged review
(any pod can POST one) carries a containers list that is a number or metadata that is a list. Most cases
below made a stage raise before podtypes.check_pod_types: a fail-closed "internal error" answer, an ERROR
log line and an error count that any pod could inflate at will.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from webhook.edge.app import create_app, metrics_app
from webhook.settings import Settings

Review = Callable[[str], dict[str, Any]]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(pod: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = pod
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


# (edit of the recorded pod, the field the answer must name); most raised in some stage before the check.
CASES = [
    (_set("spec", "0x10"), "request.object.spec must be an object"),
    (_set("metadata", ["x"]), "request.object.metadata must be an object"),
    (_set("spec.initContainers", 1), "request.object.spec.initContainers must be a list"),
    (_set("spec.containers.0.name", {"a": 1}), "request.object.spec.containers[0].name must be a string"),
    (_set("spec.containers.0.env", 1), "request.object.spec.containers[0].env must be a list"),
    (_set("spec.containers.0.volumeMounts", True), "request.object.spec.containers[0].volumeMounts must be a list"),
    (_set("spec.volumes", 1), "request.object.spec.volumes must be a list"),
    (_set("spec.containers.0.env", [1]), "request.object.spec.containers[0].env[0] must be an object"),
]


@pytest.mark.parametrize("status", [None, "injected"], ids=["first-call", "reinvocation"])
@pytest.mark.parametrize(("edit", "field"), CASES, ids=[field for _, field in CASES])
def test_a_forged_pod_of_the_wrong_types_is_denied_naming_the_field(
    asgi_client: Callable[[Any], Any],
    cluster: Any,
    review: Review,
    caplog: pytest.LogCaptureFixture,
    edit: Callable[[dict[str, Any]], None],
    field: str,
    status: str | None,
) -> None:
    sent = copy.deepcopy(review("review-1"))
    pod = sent["request"]["object"]
    if status:
        pod["metadata"]["annotations"]["ferry.dev/status"] = status
        pod["spec"]["initContainers"].insert(0, {"name": "ferry-init", "image": "x"})
    edit(pod)
    app = create_app(Settings(), cluster, native_sidecars=True)
    with caplog.at_level(logging.INFO, logger="ferry.webhook"):
        response = asgi_client(app).post("/mutate", content=json.dumps(sent))
    assert response.status_code == 200, response.text  # a well-formed review gets an answer
    answer = response.json()["response"]
    assert answer["allowed"] is False and field in answer["status"]["message"]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    scraped = asgi_client(metrics_app(app.state.metrics)).get("/metrics").text
    assert 'outcome="error"} 1.0' not in scraped


def test_a_pod_of_the_schema_s_types_with_nulls_is_still_admitted(
    asgi_client: Callable[[Any], Any], cluster: Any, review: Review
) -> None:
    """Nulls where the schema has an object or a list are what the API server may send: not malformed."""
    sent = copy.deepcopy(review("review-1"))
    pod = sent["request"]["object"]
    pod["spec"]["containers"][0]["env"] = None
    pod["spec"]["containers"][0]["resources"] = None
    pod["spec"]["securityContext"] = None
    response = asgi_client(create_app(Settings(), cluster, native_sidecars=True)).post(
        "/mutate", content=json.dumps(sent)
    )
    assert response.status_code == 200 and response.json()["response"]["allowed"] is True
