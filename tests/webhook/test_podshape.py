"""Checks on the pod's own shape: run-to-completion, never raising on malformed pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.policy.request import is_run_to_completion

PodFactory = Callable[..., dict[str, Any]]


def test_bare_pods_that_exit_are_run_to_completion(pod_factory: PodFactory) -> None:
    assert is_run_to_completion(pod_factory(restartPolicy="OnFailure"))
    assert is_run_to_completion(pod_factory(restartPolicy="Never"))
    assert not is_run_to_completion(pod_factory(restartPolicy="Always"))
    assert not is_run_to_completion(pod_factory())


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
