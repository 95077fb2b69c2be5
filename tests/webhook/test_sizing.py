"""Ferry's requests on Fargate and Autopilot: the worked tables of docs/fargate.md and docs/autopilot.md."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support.pods import make_pod
from tests.support.resolving import admit_request
from webhook.policy.platform import FARGATE_SCHEDULER, autopilot_resources, describe_size, platform_settings
from webhook.policy.podshape import MAX_POD_CONTAINERS
from webhook.policy.request import PodRequest, is_run_to_completion
from webhook.policy.sizing import (
    MAX_SIZED_CONTAINERS,
    fargate_size,
    pod_request,
    size_for_platform,
    stripped_native_sidecar,
)
from webhook.quantity import PodAmounts, amount, parse_quantity, pod_amounts
from webhook.settings import Settings, SettingsError


def table_settings(**changes: Any) -> Settings:
    """The worked table's settings: Ferry requests 50m / 64Mi, limits 500m / 128Mi (docs/fargate.md).

    Set here, not taken from the defaults (10m / 32Mi since the lean fetcher), so each row keeps testing the
    rule with a sidecar big enough to move a pod to the next Fargate size.
    """
    table = {"fetcher_cpu_request": "50m", "fetcher_memory_request": "64Mi", "fetcher_memory_limit": "128Mi"}
    return Settings(default_region="eu-west-1", **{**table, **changes})


SETTINGS = table_settings()
OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'
GiB = 2**30
MiB = 2**20


def q(text: str) -> Fraction:
    value = parse_quantity(text)
    assert value is not None
    return value


def app_pod(cpu: str, memory: str, *, refresh: bool = True, fargate: bool = True, **spec: Any) -> dict[str, Any]:
    annotations = {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS}
    if refresh:
        annotations["ferry.dev/refresh-interval"] = "5m"
    app = {"name": "app", "image": "app:1", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
    pod = make_pod(annotations, [app], namespace="team-a", **spec)
    if fargate:
        pod["spec"]["schedulerName"] = FARGATE_SCHEDULER
    return pod


def admit(pod: dict[str, Any], settings: Settings = SETTINGS, *, native: bool = True) -> Any:
    return admit_request(PodRequest.read(pod, "team-a", None), settings, native_sidecars=native)


def amounts_of(pod: dict[str, Any]) -> PodAmounts:
    """What the pipeline reads for a reinvocation (nothing added): the containers' amounts as they stand."""
    return pod_amounts(pod, limit=MAX_SIZED_CONTAINERS)


def own(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


def size_of(pod: dict[str, Any]) -> str:
    """The pod's Fargate size, every container (Ferry's too) counted with the requests it has."""
    spec = pod["spec"]
    return describe_size(fargate_size(pod_request(spec, "cpu"), pod_request(spec, "memory")))


# --- the table and Kubernetes' arithmetic ---


@pytest.mark.parametrize(
    ("cpu", "memory", "size"),
    [
        ("0", "0", "0.25 vCPU / 0.5 GB"),  # no requests: the smallest size
        ("250m", "256Mi", "0.25 vCPU / 0.5 GB"),  # 256Mi + 256Mi fits 0.5 GB exactly
        ("250m", "257Mi", "0.25 vCPU / 1 GB"),
        ("250m", "512Mi", "0.25 vCPU / 1 GB"),
        ("251m", "512Mi", "0.5 vCPU / 1 GB"),
        ("250m", "1793Mi", "0.5 vCPU / 3 GB"),  # past 0.25 vCPU's 2 GB: the next vCPU tier
        ("1", "8Gi", "2 vCPU / 9 GB"),
        ("4", "30Gi", "8 vCPU / 32 GB"),  # 8 vCPU goes in 4 GB steps from 16 GB
        ("16", "120Gi", "more than Fargate's largest size"),
    ],
)
def test_fargate_rounds_up_to_its_table(cpu: str, memory: str, size: str) -> None:
    assert describe_size(fargate_size(amount(cpu, "cpu"), amount(memory, "memory"))) == size


def test_native_sidecars_count_as_kubernetes_counts_them() -> None:
    spec = {
        "initContainers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "300m"}}},  # runs beside "side": 500m
        ],
        "containers": [{"name": "app", "resources": {"limits": {"cpu": "250m"}}}],  # request defaults to limit
    }
    assert pod_request(spec, "cpu") == 500  # millicores
    spec["containers"][0]["resources"] = {"requests": {"cpu": "400m"}}
    assert pod_request(spec, "cpu") == 600  # 400m + the sidecar's 200m


# --- Fargate: the worked table of docs/fargate.md ---


@pytest.mark.parametrize(
    ("cpu", "memory", "refresh", "size", "before", "ferry_cpu", "ferry_memory"),
    [
        # Init container only: it never runs beside the app, so it costs nothing.
        ("250m", "512Mi", False, "0.25 vCPU / 1 GB", "0.25 vCPU / 1 GB", "50m", "64Mi"),
        # The case: 50m lifted it to 0.5 vCPU; the sidecar's CPU request goes to 0 instead.
        ("250m", "512Mi", True, "0.25 vCPU / 1 GB", "0.5 vCPU / 1 GB", "0", "64Mi"),
        # Headroom below 0.25 vCPU: the sidecar keeps what fits.
        ("220m", "512Mi", True, "0.25 vCPU / 1 GB", "0.5 vCPU / 1 GB", "30m", "64Mi"),
        ("100m", "512Mi", True, "0.25 vCPU / 1 GB", "0.25 vCPU / 1 GB", "50m", "64Mi"),
        ("1", "2Gi", True, "1 vCPU / 3 GB", "2 vCPU / 4 GB", "0", "64Mi"),
        ("2", "4Gi", True, "2 vCPU / 5 GB", "4 vCPU / 8 GB", "0", "64Mi"),
    ],
)
def test_ferry_fits_in_the_size_the_app_already_pays_for(
    cpu: str, memory: str, refresh: bool, size: str, before: str, ferry_cpu: str, ferry_memory: str
) -> None:
    """The worked table of docs/fargate.md, row by row ("before": the same pod with the fitting off)."""
    pod = app_pod(cpu, memory, refresh=refresh)
    assert size_of(pod) == size
    assert size_of(admit(pod, table_settings(fargate_sizing="off")).pod) == before
    admission = admit(pod)
    assert admission.outcome == "injected" and admission.warnings == ()
    assert size_of(admission.pod) == size
    for name in ("ferry-init", "ferry-sidecar") if refresh else ("ferry-init",):
        resources = own(admission.pod, name)["resources"]
        assert resources["requests"] == {"cpu": ferry_cpu, "memory": ferry_memory}
        assert resources["limits"] == {"cpu": "500m", "memory": "128Mi"}, "limits are never lowered"


def test_pods_not_bound_for_fargate_keep_the_configured_requests() -> None:
    pod = admit(app_pod("250m", "512Mi", fargate=False)).pod
    assert own(pod, "ferry-sidecar")["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}


def test_memory_that_cannot_fit_is_said_with_both_sizes() -> None:
    # 1792Mi + 256Mi fills 0.25 vCPU / 2 GB; the sidecar's 64Mi would move it to 0.5 vCPU / 3 GB.
    admission = admit(app_pod("250m", "1792Mi"))
    assert admission.outcome == "injected"
    (warning,) = admission.warnings
    assert "0.25 vCPU / 2 GB without Ferry" in warning and "0.5 vCPU / 3 GB with" in warning
    assert "FERRY_FETCHER_MEMORY_REQUEST_FLOOR" in warning and "Fix:" in warning
    # It names the field to change, in the app's containers, and nothing of the CPU that did fit.
    assert "spec.containers[*].resources.requests.memory" in warning and "requests.cpu" not in warning
    assert len(warning) < 1000
    # The CPU was still brought down to the floor: the pod is as small as Ferry can make it.
    assert own(admission.pod, "ferry-sidecar")["resources"]["requests"] == {"cpu": "0", "memory": "64Mi"}


def test_deny_mode_refuses_with_the_same_message() -> None:
    settings = table_settings(fargate_oversize="deny")
    admission = admit(app_pod("250m", "1792Mi"), settings)
    assert admission.outcome == "denied" and admission.reason == "platform-sizing"
    assert admission.message is not None and "0.5 vCPU / 3 GB" in admission.message


def test_a_memory_floor_below_the_request_lets_memory_fit() -> None:
    settings = table_settings(fetcher_memory_request_floor="0")
    admission = admit(app_pod("250m", "1760Mi"), settings)  # 32Mi of headroom in 0.25 vCPU / 2 GB
    assert admission.warnings == ()
    assert own(admission.pod, "ferry-sidecar")["resources"]["requests"] == {"cpu": "0", "memory": "32Mi"}


def test_a_limit_range_minimum_is_a_floor() -> None:
    limit_range = {"metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container", "min": {"cpu": "10m"}}]}}
    first = admit_request(
        PodRequest.read(app_pod("250m", "512Mi"), "team-a", None), SETTINGS, limit_ranges=[limit_range]
    )
    assert own(first.pod, "ferry-sidecar")["resources"]["requests"]["cpu"] == "10m"
    assert first.warnings and "0.5 vCPU / 1 GB" in first.warnings[0]
    again = size_for_platform(
        first.pod, amounts_of(first.pod), SETTINGS, [limit_range], run_to_completion=is_run_to_completion(first.pod)
    )  # a reinvocation starts from the settings
    assert own(again.pod, "ferry-sidecar")["resources"]["requests"]["cpu"] == "10m"


def test_the_fargate_webhook_after_ferry_is_handled_on_reinvocation() -> None:
    first = admit(app_pod("250m", "512Mi", fargate=False)).pod
    assert own(first, "ferry-sidecar")["resources"]["requests"]["cpu"] == "50m"
    after_fargate = {**first, "spec": {**first["spec"], "schedulerName": FARGATE_SCHEDULER}}
    again = admit(after_fargate)
    assert again.outcome == "reinvoked"
    assert own(again.pod, "ferry-sidecar")["resources"]["requests"]["cpu"] == "0"
    assert size_of(again.pod) == "0.25 vCPU / 1 GB"


# --- pod-level resources: Ferry's containers live inside them ---


def pod_level_problems(pod: dict[str, Any]) -> list[str]:
    """What the API server's validation of pod-level resources would refuse (validatePodResourceConsistency)."""
    spec = pod["spec"]
    requests, limits = spec["resources"].get("requests", {}), spec["resources"].get("limits", {})
    problems = []
    for resource in ("cpu", "memory"):
        if resource in requests and pod_request(spec, resource) > amount(requests[resource], resource):
            problems.append(f"containers request more {resource} than the pod")
        if resource in requests and resource in limits and q(requests[resource]) > q(limits[resource]):
            problems.append(f"pod {resource} request above its limit")
        for container in spec["containers"]:
            limit = container.get("resources", {}).get("limits", {}).get(resource)
            if resource in limits and limit is not None and q(limit) > q(limits[resource]):
                problems.append(f"{container['name']} {resource} limit above the pod's")
    return problems


def test_pod_level_resources_with_room_hold_ferrys_containers_unchanged() -> None:
    budget = {"cpu": "500m", "memory": "1Gi"}
    pod = app_pod("250m", "512Mi", fargate=False, resources={"requests": budget, "limits": budget})
    admission = admit(pod)
    assert admission.outcome == "injected" and admission.warnings == ()
    # The pod's figure (what it is scheduled and billed by) is unchanged, and it stays Guaranteed.
    assert admission.pod["spec"]["resources"] == {"requests": budget, "limits": budget}
    assert own(admission.pod, "ferry-sidecar")["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert pod_level_problems(dict(admission.pod)) == []


def test_pod_level_requests_without_room_lower_ferrys_cpu_and_raise_only_what_must_be() -> None:
    budget = {"cpu": "250m", "memory": "512Mi"}
    admission = admit(app_pod("250m", "512Mi", fargate=False, resources={"requests": budget, "limits": budget}))
    assert admission.outcome == "injected"
    for name in ("ferry-init", "ferry-sidecar"):
        assert own(admission.pod, name)["resources"]["requests"] == {"cpu": "0", "memory": "64Mi"}
    # Memory is not lowered below its floor (the request): the pod-level figures grow by the sidecar's 64Mi.
    resources = admission.pod["spec"]["resources"]
    assert resources == {"requests": {"cpu": "250m", "memory": "576Mi"}, "limits": {"cpu": "250m", "memory": "576Mi"}}
    (warning,) = admission.warnings
    assert "spec.resources.requests.memory from 512Mi to 576Mi" in warning and "Fix:" in warning
    assert pod_level_problems(dict(admission.pod)) == []


def test_a_pod_level_limit_below_ferrys_container_limit_bounds_it() -> None:
    pod = app_pod("50m", "64Mi", fargate=False, resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}})
    admission = admit(pod, native=False)  # a regular sidecar: the API server checks its limit against the pod's
    assert admission.outcome == "injected" and admission.warnings == ()
    assert own(admission.pod, "ferry-sidecar")["resources"]["limits"] == {"cpu": "100m", "memory": "128Mi"}
    assert own(admission.pod, "ferry-sidecar")["resources"]["requests"]["cpu"] == "50m"
    assert pod_level_problems(dict(admission.pod)) == []


def test_pod_level_requests_on_fargate_keep_both_figures() -> None:
    # Fargate documents sizing from container requests only: Ferry keeps that size and the pod-level figure.
    pod = app_pod("250m", "512Mi", resources={"requests": {"cpu": "1", "memory": "2Gi"}})
    admission = admit(pod)
    assert admission.warnings == ()
    assert admission.pod["spec"]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert own(admission.pod, "ferry-sidecar")["resources"]["requests"] == {"cpu": "0", "memory": "64Mi"}
    assert size_of(dict(admission.pod)) == "0.25 vCPU / 1 GB"


def test_pod_level_fitting_is_the_same_on_reinvocation() -> None:
    budget = {"cpu": "250m", "memory": "512Mi"}
    first = admit(app_pod("250m", "512Mi", fargate=False, resources={"requests": budget})).pod
    again = size_for_platform(first, amounts_of(first), SETTINGS, run_to_completion=is_run_to_completion(first))
    assert again.pod == first and again.warnings == ()


# --- Autopilot: the table of docs/autopilot.md ---


@pytest.mark.parametrize(
    ("mode", "requests", "limits", "expected_requests", "expected_limits"),
    [
        # Ferry's defaults are inside the 1:1 .. 1:6.5 band: nothing to change with bursting.
        ("bursting", ("50m", "64Mi"), ("500m", "128Mi"), ("50m", "64Mi"), ("500m", "128Mi")),
        # Without bursting, limits equal requests: the memory request rises to the limit, never below it.
        ("no-bursting", ("50m", "64Mi"), ("500m", "128Mi"), ("50m", "128Mi"), ("50m", "128Mi")),
        # Too little CPU for the memory: raised to memory / 6.5 (512Mi -> 77m).
        ("bursting", ("10m", "512Mi"), ("500m", "512Mi"), ("77m", "512Mi"), ("500m", "512Mi")),
        # Too little memory for the CPU: raised to 1 GiB per vCPU (250m -> 256Mi).
        ("no-bursting", ("250m", "64Mi"), ("250m", "128Mi"), ("250m", "256Mi"), ("250m", "256Mi")),
    ],
)
def test_autopilot_never_has_to_adjust_ferrys_containers(
    mode: str,
    requests: tuple[str, str],
    limits: tuple[str, str],
    expected_requests: tuple[str, str],
    expected_limits: tuple[str, str],
) -> None:
    resources = {
        "requests": dict(zip(("cpu", "memory"), requests, strict=True)),
        "limits": dict(zip(("cpu", "memory"), limits, strict=True)),
    }
    result = autopilot_resources(resources, mode)
    assert result["requests"] == dict(zip(("cpu", "memory"), expected_requests, strict=True))
    assert result["limits"] == dict(zip(("cpu", "memory"), expected_limits, strict=True))
    cpu, memory = q(result["requests"]["cpu"]), q(result["requests"]["memory"])
    assert cpu * GiB <= memory <= Fraction(13, 2) * cpu * GiB, "inside Autopilot's ratio band"
    assert q(result["requests"]["memory"]) >= min(q(limits[1]), q(expected_requests[1]))


def test_autopilot_setting_reaches_both_containers() -> None:
    settings = table_settings(autopilot="no-bursting")
    pod = admit(app_pod("500m", "1Gi", fargate=False), settings).pod
    for name in ("ferry-init", "ferry-sidecar"):
        assert own(pod, name)["resources"] == {
            "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "100Mi"},
            "limits": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "100Mi"},
        }
    bursting = admit(app_pod("500m", "1Gi", fargate=False), table_settings(autopilot="bursting"))
    assert own(bursting.pod, "ferry-sidecar")["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "100Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }


# --- native sidecars stripped by another webhook ---


def test_a_stripped_native_sidecar_is_denied_on_reinvocation() -> None:
    first = admit(app_pod("250m", "512Mi", fargate=False, restartPolicy="Never")).pod
    assert own(first, "ferry-sidecar")["restartPolicy"] == "Always"
    stripped = {
        **first,
        "spec": {
            **first["spec"],
            "initContainers": [
                {k: v for k, v in c.items() if k != "restartPolicy"} for c in first["spec"]["initContainers"]
            ],
        },
    }
    assert stripped_native_sidecar(first, run_to_completion=is_run_to_completion(first)) is None
    admission = admit(stripped)
    assert admission.outcome == "denied"
    assert admission.message is not None
    assert "restartPolicy: Always" in admission.message and "Fix:" in admission.message


@pytest.mark.parametrize("owned_by_job", [False, True])
def test_a_sidecar_moved_among_the_app_containers_of_a_job_is_denied(owned_by_job: bool) -> None:
    # Another webhook "normalises" native sidecars into regular containers: a Job's pod would never complete.
    restart = {} if owned_by_job else {"restartPolicy": "Never"}
    first = admit(app_pod("250m", "512Mi", fargate=False, **restart)).pod
    if owned_by_job:
        first = {**first, "metadata": {**first["metadata"], "ownerReferences": [{"kind": "Job", "name": "j"}]}}
    sidecar = {k: v for k, v in own(first, "ferry-sidecar").items() if k != "restartPolicy"}
    spec = first["spec"]
    moved = {
        **first,
        "spec": {
            **spec,
            "initContainers": [c for c in spec["initContainers"] if c["name"] != "ferry-sidecar"],
            "containers": [*spec["containers"], sidecar],
        },
    }
    admission = admit(moved)
    assert admission.outcome == "denied", admission.outcome
    assert admission.message is not None and "ferry-sidecar" in admission.message and "Fix:" in admission.message


def test_a_regular_sidecar_is_not_taken_for_a_stripped_one() -> None:
    pod = admit(app_pod("250m", "512Mi", fargate=False), native=False).pod
    assert stripped_native_sidecar(pod, run_to_completion=is_run_to_completion(pod)) is None
    assert admit(pod).outcome == "reinvoked"


# --- settings ---


def test_settings_read_the_new_variables() -> None:
    settings = Settings.from_env(
        {
            "FERRY_FETCHER_CPU_REQUEST_FLOOR": "5m",
            "FERRY_FETCHER_MEMORY_REQUEST_FLOOR": "32Mi",
            "FERRY_FARGATE_SIZING": "off",
            "FERRY_FARGATE_OVERSIZE": "deny",
            "FERRY_AUTOPILOT": "no-bursting",
            "FERRY_AUTOPILOT_EPHEMERAL_STORAGE": "50Mi",
        }
    )
    assert (settings.fetcher_cpu_request_floor, settings.fetcher_memory_request_floor) == ("5m", "32Mi")
    assert (settings.fargate_sizing, settings.fargate_oversize, settings.autopilot) == ("off", "deny", "no-bursting")
    assert settings.autopilot_ephemeral_storage == "50Mi"
    assert Settings.from_env({}).fetcher_cpu_request_floor == "0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FERRY_FETCHER_CPU_REQUEST_FLOOR", "-1m"),
        ("FERRY_FETCHER_MEMORY_REQUEST_FLOOR", "lots"),
        ("FERRY_FARGATE_OVERSIZE", "ignore"),
        ("FERRY_AUTOPILOT", "yes"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_memory_is_in_mebibytes() -> None:
    assert MiB * 1024 == GiB


# --- hostile input: a tenant writes the pod, its requests and its schedulerName ---


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("1e999", "1e999"), ("-5", "-5Mi"), ("lots", "[]"), ("0.0000001", "1"), ("999", "999Ti"), ("1e-999", "9" * 64)],
)
@pytest.mark.parametrize("pod_level", [False, True])
@pytest.mark.parametrize("platform", ["fargate", "autopilot"])
def test_absurd_requests_never_break_admission(cpu: str, memory: str, pod_level: bool, platform: str) -> None:
    pod = app_pod(cpu, memory, fargate=platform == "fargate")
    if pod_level:  # the same figures at pod level too, requests and limits
        pod["spec"]["resources"] = {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        }
    admission = admit(pod, table_settings(autopilot="no-bursting") if platform == "autopilot" else SETTINGS)
    assert admission.outcome in ("injected", "denied")
    for warning in admission.warnings:
        assert len(warning) < 1000
    resources = admission.pod["spec"].get("resources", {})
    assert all(len(str(value)) <= 32 for kind in resources.values() for value in kind.values()), resources


def test_a_tenant_claiming_fargate_only_changes_its_own_pod() -> None:
    # schedulerName is the tenant's to write; the only effect is on Ferry's requests in this pod.
    claimed = admit(app_pod("250m", "512Mi", fargate=True)).pod
    other = admit(app_pod("250m", "512Mi", fargate=False)).pod
    assert own(claimed, "ferry-sidecar")["resources"]["requests"]["cpu"] == "0"
    assert own(other, "ferry-sidecar")["resources"]["requests"]["cpu"] == "50m"
    assert own(claimed, "ferry-sidecar")["resources"]["limits"] == own(other, "ferry-sidecar")["resources"]["limits"]


def test_many_containers_are_sized_in_one_pass() -> None:
    pod = app_pod("10m", "16Mi")
    pod["spec"]["containers"] = [
        {"name": f"c{i}", "image": "app:1", "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}
        for i in range(200)
    ]
    admission = admit(pod)
    assert admission.outcome == "injected"
    # 200m and 200Mi + 256Mi: 0.5 GB leaves 56Mi, below the sidecar's 64Mi; the CPU still fits (50m).
    (warning,) = admission.warnings
    assert "0.25 vCPU / 0.5 GB without Ferry" in warning and "memory" in warning
    assert own(admission.pod, "ferry-sidecar")["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}


def test_autopilot_figures_reach_pod_level_resources_and_limit_ranges() -> None:
    settings = table_settings(autopilot="no-bursting")
    pod = app_pod("500m", "1Gi", fargate=False, resources={"requests": {"cpu": "500m", "memory": "1Gi"}})
    admitted = admit(pod, settings).pod
    # The sidecar runs beside the app: the pod's own requests grow by what Autopilot gets, 128Mi (not 64Mi).
    assert admitted["spec"]["resources"]["requests"] == {"cpu": "550m", "memory": "1152Mi"}
    limit_range = {"metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]}}
    request = PodRequest.read(app_pod("500m", "1Gi", fargate=False), "team-a", None)
    checked = admit_request(request, settings, limit_ranges=[limit_range])
    # Without Autopilot the 500m limit breaks max 100m; with no-bursting the limit is the 50m request.
    assert checked.outcome == "injected"


@pytest.mark.parametrize("where", ["container", "pod-level"])
def test_a_quantity_too_long_for_python_never_makes_admission_raise(where: str) -> None:
    # 5000 digits: past CPython's int conversion limit; only a forged review carries it (the API server would not).
    pod = app_pod("1" * 5000, "512Mi") if where == "container" else app_pod("250m", "512Mi")
    if where == "pod-level":
        pod["spec"]["resources"] = {"requests": {"cpu": "1" * 5000, "memory": "1Gi"}}
    admission = admit(pod)
    assert admission.outcome in ("injected", "denied")


def test_sizing_reads_no_more_containers_than_ferry_injects_into() -> None:
    # A forged reinvocation skips stage 2's container count; sizing must not walk 30,000 containers for it.
    first = admit(app_pod("250m", "512Mi", fargate=False)).pod
    spec = first["spec"]
    filler = {"image": "a", "resources": {"requests": {"memory": "1Mi"}}}
    forged = {
        **first,
        "spec": {
            **spec,
            "schedulerName": FARGATE_SCHEDULER,
            "containers": spec["containers"] + [{**filler, "name": f"c{i}"} for i in range(MAX_POD_CONTAINERS)],
        },
    }
    sized = size_for_platform(forged, amounts_of(forged), SETTINGS, run_to_completion=is_run_to_completion(forged))
    assert sized.pod == forged and sized.warnings == (), "more containers than Ferry injects into: left as sent"
    # One fewer, and the pod is one Ferry could have injected: it is fitted as usual.
    forged["spec"]["containers"] = forged["spec"]["containers"][:-1]
    assert (
        own(
            size_for_platform(forged, amounts_of(forged), SETTINGS, run_to_completion=is_run_to_completion(forged)).pod,
            "ferry-sidecar",
        )["resources"]["requests"]["cpu"]
        == "0"
    )


@pytest.mark.parametrize("platform", ["autopilot", "fargate", "pod-level"])
@pytest.mark.parametrize(
    "resources", [["x"], "abc", 5, {"requests": ["x"]}, {"requests": "ab"}, {"limits": "ab"}, {"limits": [1]}]
)
def test_a_forged_reinvocation_with_odd_own_resources_never_makes_admission_raise(
    platform: str, resources: Any
) -> None:
    # A forged review of an "injected" pod whose Ferry containers carry resources of the wrong JSON type.
    first = admit(app_pod("250m", "512Mi", fargate=False)).pod
    spec = dict(first["spec"])
    spec["initContainers"] = [{**c, "resources": resources} for c in spec["initContainers"]]
    settings = table_settings(autopilot="no-bursting") if platform == "autopilot" else SETTINGS
    if platform == "fargate":
        spec["schedulerName"] = FARGATE_SCHEDULER
    if platform == "pod-level":
        spec["resources"] = {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1m", "memory": "1"}}
    admission = admit({**first, "spec": spec}, settings)
    assert admission.outcome in ("reinvoked", "denied")


@pytest.mark.parametrize("odd", [{"name": {}}, {"name": ["ferry-init"]}, 5, None, "ferry-init"])
@pytest.mark.parametrize("settings", [SETTINGS, table_settings(autopilot="bursting")], ids=["fargate", "autopilot"])
def test_sizing_takes_any_json_where_a_container_or_its_name_belongs(odd: Any, settings: Settings) -> None:
    # Sizing runs on every reinvocation; a forged review can put any JSON in a container list or a name.
    first = admit(app_pod("250m", "512Mi"), settings).pod
    spec = first["spec"]
    for shape in ({"containers": [*spec["containers"], odd]}, {"initContainers": odd}, {"containers": odd}):
        forged = {**first, "spec": {**spec, **shape, "resources": {"requests": {"cpu": "1"}}}}
        size_for_platform(
            forged, amounts_of(forged), platform_settings(settings), run_to_completion=is_run_to_completion(forged)
        )  # must not raise


# --- The amounts sizing reads: parsed before Ferry's containers are placed, they are the placed pod's ---

_quantities = st.sampled_from(["0", "1", "10m", "250m", "1.5", "64Mi", "1Gi", "x", 3, None])
_resources = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            kind: st.dictionaries(st.sampled_from(["cpu", "memory", "ephemeral-storage"]), _quantities, max_size=3)
            for kind in ("requests", "limits")
        },
    ),
)


@st.composite
def _sized_pods(draw: st.DrawFn) -> dict[str, Any]:
    def container(name: str, *, init: bool) -> dict[str, Any]:
        made: dict[str, Any] = {"name": name, "image": "i"}
        if (resources := draw(_resources)) is not None:
            made["resources"] = resources
        if init and draw(st.booleans()):
            made["restartPolicy"] = "Always"
        return made

    inits = [container(f"setup-{i}", init=True) for i in range(draw(st.integers(0, 3)))]
    apps = [container(f"app-{i}", init=False) for i in range(draw(st.integers(1, 3)))]
    pod = app_pod("100m", "128Mi", refresh=draw(st.booleans()), fargate=draw(st.booleans()))
    pod["spec"]["containers"] = apps
    if inits:
        pod["spec"]["initContainers"] = inits
    if draw(st.booleans()):
        pod["spec"]["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
    return pod


@hypothesis_settings(max_examples=150, deadline=None)
@given(pod=_sized_pods(), native=st.booleans(), autopilot=st.sampled_from(["off", "bursting"]))
def test_sizing_reads_the_amounts_of_the_pod_it_sizes(pod: dict[str, Any], native: bool, autopilot: str) -> None:
    """The amounts read before Ferry's containers are placed (or none, for a pod not sized) size the placed pod
    exactly as the amounts read from the placed pod itself do."""
    import webhook.policy.pipeline as pipeline
    from webhook.policy.sizing import _aligned

    compared: list[PodAmounts | None] = []

    def spy(placed: Any, amounts: PodAmounts | None, *args: Any, **kwargs: Any) -> Any:
        sized = size_for_platform(placed, amounts, *args, **kwargs)
        assert sized == size_for_platform(placed, amounts_of(placed), *args, **kwargs)
        if amounts is not None:
            spec = placed["spec"]
            assert _aligned(spec, amounts) == _aligned(spec, amounts_of(placed))
        compared.append(amounts)
        return sized

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(pipeline, "size_for_platform", spy)
        admission = admit(pod, table_settings(autopilot=autopilot), native=native)
    assert admission.outcome in ("injected", "denied"), admission.message
    assert len(compared) == (admission.outcome == "injected" or admission.reason == "platform-sizing")
