"""Fixtures of the API-server suite: one control plane and one Ferry install per session.

Why it exists: starting etcd, kube-apiserver and kube-controller-manager costs
seconds, so the whole suite shares one (session scope), and every test works in
namespaces of its own. The suite follows the envtest convention: it runs when
``KUBEBUILDER_ASSETS`` names the folder of the binaries, and is skipped with one
line saying how to enable it otherwise. With the variable set, a control plane
that does not start is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.controlplane import ControlPlane, start_control_plane
from tests.support.ferrylib import Ferry, new_workdir

ENABLE_HINT = (
    "API-server suite off: set KUBEBUILDER_ASSETS to a folder holding etcd, kube-apiserver and "
    "kube-controller-manager to run tests/e2e (docs/local-cluster.md, 'The binaries', says how to get them)"
)
HERE = Path(__file__).resolve().parent


# Without the binaries nothing here is collected; the summary says so in one line.
collect_ignore_glob = [] if os.environ.get("KUBEBUILDER_ASSETS") else ["test_*.py"]


# In CI the suite must run: a missing KUBEBUILDER_ASSETS fails the run instead of skipping it quietly.
CI_MISSING = (
    "CI=true but KUBEBUILDER_ASSETS is not set: the API-server suite (tests/e2e) did not run, so this run FAILS. "
    "Point KUBEBUILDER_ASSETS at etcd, kube-apiserver and kube-controller-manager v1.36 "
    "(e.g. `setup-envtest use 1.36.2 -p path`; .ci/run does it)"
)


def _suite_missing_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true" and not os.environ.get("KUBEBUILDER_ASSETS")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _suite_missing_in_ci():
        terminalreporter.write_line(CI_MISSING, red=True, bold=True)
    elif not os.environ.get("KUBEBUILDER_ASSETS"):
        terminalreporter.write_line(ENABLE_HINT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _suite_missing_in_ci() and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:  # only reachable if a test outside this package asks for it
        pytest.skip(ENABLE_HINT)
    plane = start_control_plane(assets)
    try:
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(plane.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def ferry(control_plane: ControlPlane) -> Iterator[Ferry]:
    """Ferry installed from the project's manifests, one replica serving."""
    install = Ferry(control_plane, new_workdir())
    try:
        install.install()
        install.start_replica()
        yield install
    finally:
        install.stop_all()
        shutil.rmtree(install.workdir, ignore_errors=True)


@pytest.fixture
def serving_ferry(ferry: Ferry) -> Ferry:
    """Ferry with at least one replica serving (a test before may have stopped them)."""
    if not ferry.replicas:
        ferry.refresh_token()
        ferry.start_replica()
    return ferry
