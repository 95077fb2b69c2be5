"""Settings.from_env: the env var contract the manifests and docs rely on."""

from __future__ import annotations

import pytest

from webhook.settings import Settings, SettingsError


def test_defaults_match_the_documented_contract() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.namespace == "ferry-system"
    assert settings.service_name == "ferry-webhook"
    assert settings.webhook_config_name == "ferry"
    assert settings.tls_secret_name == "ferry-webhook-tls"
    assert settings.tls_cert_file is None and settings.tls_key_file is None
    assert settings.fetcher_image == "ghcr.io/ferry-dev/ferry-fetcher:0.1.0"
    assert settings.fetcher_pull_policy == "IfNotPresent"
    assert settings.fetcher_resources() == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"cpu": "500m", "memory": "64Mi"},
    }
    assert settings.default_region is None
    assert settings.volume_size_limit == "16Mi"
    assert settings.min_refresh_seconds == 10.0
    assert settings.native_sidecars == "auto"
    assert settings.default_user_id == 65532
    assert settings.excluded_namespaces == frozenset({"kube-system", "kube-public"})
    assert settings.max_request_bytes == 3145728
    assert settings.log_level == "info"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "FERRY_NAMESPACE": "secrets",
            "FERRY_SERVICE_NAME": "hook",
            "FERRY_WEBHOOK_CONFIG_NAME": "ferry.example.com",
            "FERRY_TLS_SECRET_NAME": "hook-tls",
            "FERRY_TLS_CERT_FILE": "/tls/tls.crt",
            "FERRY_TLS_KEY_FILE": "/tls/tls.key",
            "FERRY_FETCHER_IMAGE": "registry.example.com/fetcher@sha256:abc",
            "FERRY_FETCHER_PULL_POLICY": "Always",
            "FERRY_FETCHER_CPU_REQUEST": "0.1",
            "FERRY_FETCHER_MEMORY_REQUEST": "32Mi",
            "FERRY_FETCHER_CPU_LIMIT": "1",
            "FERRY_FETCHER_MEMORY_LIMIT": "1Gi",
            "FERRY_DEFAULT_REGION": "eu-west-1",
            "FERRY_VOLUME_SIZE_LIMIT": "1Mi",
            "FERRY_MIN_REFRESH_INTERVAL": "1m",
            "FERRY_NATIVE_SIDECARS": "false",
            "FERRY_DEFAULT_USER_ID": "1001",
            "FERRY_EXCLUDED_NAMESPACES": "monitoring, istio-system",
            "FERRY_MAX_REQUEST_BYTES": "1024",
            "FERRY_LOG_LEVEL": "debug",
        }
    )
    assert settings.namespace == "secrets"
    assert settings.tls_cert_file == "/tls/tls.crt"
    assert settings.fetcher_image.endswith("@sha256:abc")
    assert settings.fetcher_pull_policy == "Always"
    assert settings.fetcher_resources()["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert settings.default_region == "eu-west-1"
    assert settings.min_refresh_seconds == 60.0
    assert settings.native_sidecars == "false"
    assert settings.default_user_id == 1001
    assert settings.max_request_bytes == 1024
    assert settings.log_level == "debug"
    # kube-system and kube-public stay excluded even when the list is replaced.
    assert settings.excluded_namespaces == {"monitoring", "istio-system", "kube-system", "kube-public"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FERRY_FETCHER_CPU_REQUEST", "lots"),
        ("FERRY_FETCHER_MEMORY_LIMIT", "64 Mi"),
        ("FERRY_VOLUME_SIZE_LIMIT", "16MB"),
        ("FERRY_DEFAULT_REGION", "Europe"),
        ("FERRY_MIN_REFRESH_INTERVAL", "often"),
        ("FERRY_NATIVE_SIDECARS", "yes"),
        ("FERRY_DEFAULT_USER_ID", "0"),
        ("FERRY_DEFAULT_USER_ID", "-5"),
        ("FERRY_FETCHER_PULL_POLICY", "always"),
        ("FERRY_EXCLUDED_NAMESPACES", "ok,Not_A_Namespace"),
        ("FERRY_MAX_REQUEST_BYTES", "0"),
        ("FERRY_LOG_LEVEL", "loud"),
        ("FERRY_NAMESPACE", "Ferry System"),
        ("FERRY_FETCHER_IMAGE", "has space:1"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_tls_files_go_together() -> None:
    with pytest.raises(SettingsError, match="FERRY_TLS_CERT_FILE and FERRY_TLS_KEY_FILE"):
        Settings.from_env({"FERRY_TLS_CERT_FILE": "/tls/tls.crt"})


def test_own_and_system_namespaces_are_always_excluded() -> None:
    settings = Settings.from_env({"FERRY_NAMESPACE": "ferry", "FERRY_EXCLUDED_NAMESPACES": ""})
    assert settings.is_excluded_namespace("ferry")
    assert settings.is_excluded_namespace("kube-system")
    assert settings.is_excluded_namespace("kube-public")
    assert not settings.is_excluded_namespace("team-a")


def test_settings_are_frozen_and_overridable() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.namespace = "x"  # type: ignore[misc]
    assert settings.with_overrides(native_sidecars="true").native_sidecars == "true"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FERRY_FETCHER_CPU_REQUEST", "1.2.3"),
        ("FERRY_VOLUME_SIZE_LIMIT", "."),
        ("FERRY_FETCHER_MEMORY_REQUEST", "Infinity"),
        ("FERRY_FETCHER_MEMORY_REQUEST", "1_000"),
        ("FERRY_FETCHER_CPU_LIMIT", "0"),
        ("FERRY_VOLUME_SIZE_LIMIT", "-16Mi"),
        ("FERRY_FETCHER_CPU_LIMIT", "5ki"),
    ],
)
def test_quantities_are_parsed_as_kubernetes_parses_them(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name) as raised:
        Settings.from_env({name: value})
    assert "quantity" in str(raised.value)


def test_valid_quantities_in_every_form_are_kept_as_written() -> None:
    settings = Settings.from_env(
        {
            "FERRY_FETCHER_CPU_REQUEST": "0.1",
            "FERRY_FETCHER_CPU_LIMIT": "1",
            "FERRY_FETCHER_MEMORY_REQUEST": "64e6",
            "FERRY_FETCHER_MEMORY_LIMIT": "1Gi",
            "FERRY_VOLUME_SIZE_LIMIT": ".5Mi",
        }
    )
    assert settings.fetcher_resources() == {
        "requests": {"cpu": "0.1", "memory": "64e6"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert settings.volume_size_limit == ".5Mi"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"FERRY_FETCHER_CPU_REQUEST": "2"}, ("FERRY_FETCHER_CPU_REQUEST", "FERRY_FETCHER_CPU_LIMIT")),
        (
            {"FERRY_FETCHER_MEMORY_REQUEST": "1Gi", "FERRY_FETCHER_MEMORY_LIMIT": "512Mi"},
            ("FERRY_FETCHER_MEMORY_REQUEST", "FERRY_FETCHER_MEMORY_LIMIT"),
        ),
    ],
)
def test_a_request_above_its_limit_is_refused_at_start_up(env: dict[str, str], names: tuple[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert all(name in str(raised.value) for name in names)
    assert "above" in str(raised.value)
    # Equal is fine (a Guaranteed container).
    Settings.from_env({"FERRY_FETCHER_CPU_REQUEST": "500m", "FERRY_FETCHER_CPU_LIMIT": "0.5"})
