"""The docs agree with the manifests and the code."""

from __future__ import annotations

import re
from typing import Any

from tests.manifests.render import (
    DOCS,
    NAMESPACE,
    NAMESPACE_ENTRY,
    POD_ENTRY,
    WEBHOOK_NAME,
    env_of,
    webhook_container,
)
from tests.support.paths import REPO_ROOT

# --- Docs agree with the manifests and the code ------------------------------------------------

CONTRACT_ENV_VARS = {
    "FERRY_NAMESPACE", "FERRY_SERVICE_NAME", "FERRY_WEBHOOK_CONFIG_NAME", "FERRY_TLS_SECRET_NAME",
    "FERRY_TLS_CERT_FILE", "FERRY_TLS_KEY_FILE", "FERRY_FETCHER_IMAGE", "FERRY_FETCHER_PULL_POLICY",
    "FERRY_FETCHER_CPU_REQUEST", "FERRY_FETCHER_MEMORY_REQUEST", "FERRY_FETCHER_CPU_LIMIT",
    "FERRY_FETCHER_MEMORY_LIMIT", "FERRY_DEFAULT_REGION", "FERRY_VOLUME_SIZE_LIMIT", "FERRY_MIN_REFRESH_INTERVAL",
    "FERRY_NATIVE_SIDECARS", "FERRY_DEFAULT_USER_ID", "FERRY_EXCLUDED_NAMESPACES", "FERRY_MAX_REQUEST_BYTES",
    "FERRY_LOG_LEVEL",
}  # fmt: skip


def test_configuration_doc_lists_every_setting_and_annotation(
    base: list[dict[str, Any]], cert_manager: list[dict[str, Any]]
) -> None:
    doc = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"`(FERRY_[A-Z_]+)`", doc))
    used = set(env_of(webhook_container(base))) | set(env_of(webhook_container(cert_manager)))
    settings_source = REPO_ROOT / "webhook" / "settings.py"
    if settings_source.exists():
        used |= set(re.findall(r"\"(FERRY_[A-Z_]+)\"", settings_source.read_text()))
    missing = (CONTRACT_ENV_VARS | used) - documented
    assert not missing, f"docs/configuration.md does not document {sorted(missing)}"
    from fetcher import contract

    annotations = set(contract.iter_annotation_keys())
    missing_annotations = {key for key in annotations if f"`{key}`" not in doc}
    assert not missing_annotations, f"docs/configuration.md does not document {sorted(missing_annotations)}"


def test_install_doc_commands_match_the_manifests(base: list[dict[str, Any]]) -> None:
    doc = (DOCS / "install.md").read_text()
    assert "kubectl apply -k manifests/" in doc
    for name in (NAMESPACE, WEBHOOK_NAME, POD_ENTRY, NAMESPACE_ENTRY, "ferry.dev/inject=enabled"):
        assert name in doc, name
