"""Ferry's containers against the pod's own resources and the namespace's LimitRanges."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from webhook.policy.resources import check_limit_ranges, format_quantity, parse_quantity, slim_limit_range
from webhook.policy.sizing import fit_pod_level, pod_level_budget
from webhook.settings import Settings

# Explicit figures (not the defaults, which follow the benchmarks): the arithmetic below is about them.
SETTINGS = Settings(
    fetcher_cpu_request="50m", fetcher_memory_request="64Mi", fetcher_cpu_limit="500m", fetcher_memory_limit="128Mi"
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("50m", Fraction(1, 20)),
        ("1", Fraction(1)),
        ("1.5", Fraction(3, 2)),
        ("64Mi", Fraction(64 * 2**20)),
        ("1G", Fraction(10**9)),
        ("1e3", Fraction(1000)),
        (".5", Fraction(1, 2)),
        (2, Fraction(2)),
    ],
)
def test_quantities_are_read_exactly(text: Any, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Mi", "1Xi", "1.2.3", "ten", None, True, ["1"]])
def test_what_is_not_a_quantity_reads_as_none(text: Any) -> None:
    assert parse_quantity(text) is None


def test_quantities_are_written_canonically() -> None:
    assert format_quantity(Fraction(192 * 2**20)) == "192Mi"
    assert format_quantity(Fraction(3, 20)) == "150m"
    assert format_quantity(Fraction(2)) == "2"
    assert format_quantity(Fraction(1000)) == "1000"
    assert format_quantity(Fraction(1, 3000)) == "1m"  # below a milli: rounded up, never down


def test_pod_level_budget_reads_requests_then_limits() -> None:
    spec = {"resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "1Gi"}}}
    assert pod_level_budget(spec) == {"cpu": 250, "memory": 2**30}
    assert pod_level_budget({"resources": {"requests": {"cpu": "lots", "memory": "-1"}}}) == {}
    assert pod_level_budget({"resources": None}) == {} and pod_level_budget({}) == {}


def test_pod_level_figures_with_room_are_left_as_they_are() -> None:
    spec = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}
    fit = fit_pod_level(spec, {"cpu": 500, "memory": 2**30})
    assert fit.resources is None and fit.message is None
    assert fit.limits == {"cpu": 1000, "memory": 2 * 2**30}


def test_a_short_pod_level_request_is_raised_by_the_shortfall_and_the_limit_with_it() -> None:
    spec = {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "250m", "memory": "1Gi"}}}
    fit = fit_pod_level(spec, {"cpu": 260, "memory": 544 * 2**20})
    assert fit.resources == {
        "requests": {"cpu": "260m", "memory": "544Mi"},
        "limits": {"cpu": "260m", "memory": "1Gi"},  # requests may not exceed limits: raised with them
    }
    assert fit.limits == {"cpu": 260, "memory": 2**30}
    assert fit.message is not None
    assert "spec.resources.requests.memory from 512Mi to 544Mi" in fit.message
    assert "spec.resources.limits.cpu from 250m to 260m" in fit.message and "Fix:" in fit.message
    assert spec["resources"]["requests"]["cpu"] == "250m", "the input is not modified"


def test_without_a_pod_level_request_the_limit_must_hold_the_containers() -> None:
    # The API server defaults the pod-level request to the containers' total, which may not exceed the limit.
    fit = fit_pod_level({"resources": {"limits": {"memory": "100Mi"}}}, {"cpu": 10, "memory": 128 * 2**20})
    assert fit.resources == {"limits": {"memory": "128Mi"}}


def test_pod_level_values_that_cannot_be_read_are_left_to_the_api_server() -> None:
    spec = {"resources": {"requests": {"cpu": "lots", "memory": ["1Gi"]}, "claims": [{"name": "gpu"}]}}
    assert fit_pod_level(spec, {"cpu": 10**9, "memory": 10**12}).resources is None


def limit_range(name: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "apps"}, "spec": {"limits": list(items)}}


def test_limit_ranges_that_fit_ferry_pass() -> None:
    roomy = limit_range(
        "roomy",
        {"type": "Container", "max": {"cpu": "1", "memory": "1Gi"}, "min": {"cpu": "10m", "memory": "16Mi"}},
        {"type": "Pod", "max": {"memory": "1Mi"}},  # pod-wide: not a bound on one container
        {"type": "Container", "maxLimitRequestRatio": {"cpu": "10", "memory": "2"}},
        {"type": "Container", "max": {"ephemeral-storage": "1Gi"}, "default": {"ephemeral-storage": "100Mi"}},
    )
    assert check_limit_ranges([roomy], SETTINGS, "apps") is None
    assert check_limit_ranges([], SETTINGS, "apps") is None


def test_each_kind_of_limit_range_problem_names_the_entry_and_the_fix() -> None:
    strict = limit_range(
        "strict",
        {"type": "Container", "max": {"cpu": "250m"}},
        {"type": "Container", "min": {"memory": "100Mi"}},
        {"type": "Container", "maxLimitRequestRatio": {"cpu": "4"}},
    )
    message = check_limit_ranges([strict], SETTINGS, "apps")
    assert message is not None
    assert "LimitRange strict in namespace apps: spec.limits[0].max.cpu is 250m" in message
    assert "limit 500m; raise it to 500m, or have Ferry's operator set FERRY_FETCHER_CPU_LIMIT" in message
    assert "spec.limits[1].min.memory is 100Mi but Ferry's containers request 64Mi; lower it" in message
    assert "FERRY_FETCHER_MEMORY_REQUEST" in message
    assert "spec.limits[2].maxLimitRequestRatio.cpu is 4" in message and "10 times" in message


def test_a_bound_on_a_resource_ferry_does_not_set_needs_a_default() -> None:
    storage = limit_range("storage", {"type": "Container", "max": {"ephemeral-storage": "1Gi"}})
    message = check_limit_ranges([storage], SETTINGS, "apps")
    assert message is not None and "add default.ephemeral-storage to the LimitRange" in message


def test_a_denial_names_a_bounded_number_of_problems() -> None:
    many = [limit_range(f"lr-{i}", {"type": "Container", "max": {"memory": "1Mi"}}) for i in range(50)]
    message = check_limit_ranges(many, SETTINGS, "apps")
    assert message is not None and message.count("LimitRange lr-") == 3 and "(and 47 more)" in message
    assert len(message) < 1500


def test_the_watch_cache_keeps_only_container_limits() -> None:
    full = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "l", "namespace": "apps", "resourceVersion": "5", "labels": {"a": "b"}},
        "spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}, {"type": "Container"}]},
    }
    assert slim_limit_range(full) == {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "l", "namespace": "apps", "resourceVersion": "5"},
        "spec": {"limits": [{}, {"type": "Container"}]},
    }
