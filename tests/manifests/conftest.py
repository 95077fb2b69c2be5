"""Fixtures of the manifest tests: the base, the examples and the cert-manager overlay, rendered once."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.manifests.render import (
    CERT_MANAGER_COMPONENT,
    EXAMPLES,
    MANIFESTS,
    kustomize,
)


@pytest.fixture(scope="session")
def base() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS)


@pytest.fixture(scope="session")
def examples() -> list[dict[str, Any]]:
    return kustomize(EXAMPLES)


@pytest.fixture(scope="session")
def cert_manager(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The base plus the cert-manager component, through an overlay as a user would write it."""
    overlay = tmp_path_factory.mktemp("cert-manager-overlay")
    # kustomize refuses absolute paths and overlays nested inside their base.
    to_base = os.path.relpath(MANIFESTS, overlay)
    to_component = os.path.relpath(CERT_MANAGER_COMPONENT, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {to_base}\ncomponents:\n  - {to_component}\n"
    )
    return kustomize(overlay)
