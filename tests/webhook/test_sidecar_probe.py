"""The refresh sidecar's liveness probe: its knob (annotation, webhook default), its command, its absence."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from fetcher.contract import build_spec
from tests.support.pods import make_pod
from tests.support.resolving import inject_resolved, resolve_pod
from webhook.policy.containers import build_init_container, build_liveness_probe, build_sidecar
from webhook.policy.decide import Denial
from webhook.policy.specbuild import ResolvedRequest
from webhook.settings import Settings, SettingsError

OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'
SPEC = build_spec(objects=[{"objectName": "db", "objectType": "secretsmanager"}], region="us-east-1")


def resolve(settings: Settings, **annotations: str) -> ResolvedRequest | Denial:
    pod = make_pod({"ferry.dev/objects": OBJECTS, **annotations}, namespace="team-b")
    return resolve_pod(pod, None, lambda ns, name: None, settings)


def sidecar_of(settings: Settings, **annotations: str) -> dict[str, Any]:
    pod = make_pod({"ferry.dev/objects": OBJECTS, **annotations}, namespace="team-b")
    resolved = resolve_pod(pod, None, lambda ns, name: None, settings)
    assert isinstance(resolved, ResolvedRequest), resolved
    mutated = dict(inject_resolved(pod, resolved, settings))
    init, sidecar = mutated["spec"]["initContainers"][:2]
    assert "livenessProbe" not in init  # the init container runs once: nothing to probe
    kubernetes_validate.validate(mutated, kubernetes_validate.latest_version(), strict=True)
    assert sidecar["name"] == "ferry-sidecar"
    return sidecar


def probe_after(sidecar: dict[str, Any]) -> int:
    command = sidecar["livenessProbe"]["exec"]["command"]
    assert command[:4] == ["python", "-m", "fetcher", "status"]
    assert command[command.index("--dir") + 1] == "/mnt/secrets-store"
    return int(command[command.index("--unhealthy-after") + 1])


def test_the_webhook_default_is_ten_minutes() -> None:
    settings = Settings(default_region="us-east-1")
    assert probe_after(sidecar_of(settings, **{"ferry.dev/refresh-interval": "1m"})) == 600


def test_the_webhook_default_comes_from_its_env() -> None:
    settings = Settings.from_env({"FERRY_SIDECAR_UNHEALTHY_AFTER": "15m"})
    assert settings.sidecar_unhealthy_after_seconds == 900
    with pytest.raises(SettingsError, match="FERRY_SIDECAR_UNHEALTHY_AFTER"):
        Settings.from_env({"FERRY_SIDECAR_UNHEALTHY_AFTER": "soon"})


def test_the_pod_annotation_wins_and_zero_means_no_probe() -> None:
    settings = Settings(default_region="us-east-1", sidecar_unhealthy_after_seconds=60)
    refresh = {"ferry.dev/refresh-interval": "1m"}
    after = {"ferry.dev/sidecar-unhealthy-after": "1h30m"}
    assert probe_after(sidecar_of(settings, **refresh, **after)) == 5400
    off = sidecar_of(settings, **refresh, **{"ferry.dev/sidecar-unhealthy-after": "0"})
    assert "livenessProbe" not in off
    assert "livenessProbe" not in sidecar_of(
        Settings(default_region="us-east-1", sidecar_unhealthy_after_seconds=0), **refresh
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("soon", "is not a duration"),
        ("-5m", "is not a duration"),
        ("3s", "outside 10s..7 days"),
        ("8760h", "outside 10s..7 days"),
    ],
)
def test_a_bad_value_is_denied_naming_the_annotation(value: str, needle: str) -> None:
    result = resolve(
        Settings(default_region="us-east-1"),
        **{"ferry.dev/refresh-interval": "1m", "ferry.dev/sidecar-unhealthy-after": value},
    )
    assert isinstance(result, Denial)
    assert result.message.startswith("ferry.dev/sidecar-unhealthy-after: ") and needle in result.message
    assert len(result.message) < 300


def test_without_a_refresh_the_annotation_only_warns() -> None:
    result = resolve(Settings(default_region="us-east-1"), **{"ferry.dev/sidecar-unhealthy-after": "5m"})
    assert isinstance(result, ResolvedRequest)
    assert any("sidecar-unhealthy-after has no effect" in warning for warning in result.warnings)


def test_the_regular_sidecar_gets_the_same_probe() -> None:
    native = build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=1, native=True, unhealthy_after=120)
    regular = build_sidecar(SPEC, Settings(), mount_path="/m", run_as_user=1, native=False, unhealthy_after=120)
    assert native["livenessProbe"] == regular["livenessProbe"] == build_liveness_probe("/m", 120)
    assert "livenessProbe" not in build_init_container(SPEC, Settings(), mount_path="/m", run_as_user=1)
    probe = native["livenessProbe"]
    assert probe["failureThreshold"] == 1 and probe["timeoutSeconds"] >= 5
    assert "readinessProbe" not in native  # the app keeps serving from the last good files
