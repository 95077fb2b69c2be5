"""Checks on the pod's own shape: run-to-completion, never raising on malformed pods."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.pods import make_pod
from webhook.policy.request import is_run_to_completion


def test_bare_pods_that_exit_are_run_to_completion() -> None:
    assert is_run_to_completion(make_pod(restartPolicy="OnFailure", namespace="team-b"))
    assert is_run_to_completion(make_pod(restartPolicy="Never", namespace="team-b"))
    assert not is_run_to_completion(make_pod(restartPolicy="Always", namespace="team-b"))
    assert not is_run_to_completion(make_pod(namespace="team-b"))


@pytest.mark.parametrize(
    "pod",
    [
        {"metadata": [], "spec": []},
        {"metadata": {"ownerReferences": 5, "labels": ["job-name"]}, "spec": None},
        {"metadata": {"ownerReferences": ["Job", None], "labels": "job-name"}},
        {},
    ],
)
def test_is_run_to_completion_never_raises_on_malformed_pods(pod: dict[str, Any]) -> None:
    """The admission memo keys every pod on it, before anything else has looked at the pod."""
    assert is_run_to_completion(pod) is False


@settings(max_examples=2000, deadline=None)
@given(path=st.text(alphabet="/.ab", max_size=12))
def test_mount_paths_are_normalized_as_posixpath_does(path: str) -> None:
    """The shape checks skip `normpath` for a path it would leave alone; every path must come out the same."""
    import posixpath

    from webhook.policy.podshape import _normalized

    assert _normalized(path) == posixpath.normpath(path)


def test_an_object_without_ferry_annotations_reads_as_none_of_them() -> None:
    """Namespaces mostly carry none of Ferry's annotations; their reading takes a short way with the same result."""
    import fetcher.contract as spec_model
    from webhook.policy.request import FerryAnnotations

    names = [value for name, value in vars(spec_model).items() if name.startswith("ANNOTATION_") and "/" in value]
    others = {name.replace("ferry.dev/", "example.com/"): "true" for name in names}
    read = FerryAnnotations.of({"metadata": {"annotations": others}})
    assert read.all == others and read.keys == ()
    assert all(value is None for value in read[2:])
    one = FerryAnnotations.of({"metadata": {"annotations": {**others, "ferry.dev/region": " eu-west-1 "}}})
    assert one.keys == ("ferry.dev/region",) and one.region == "eu-west-1" and one.inject is None
