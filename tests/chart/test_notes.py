"""The chart's NOTES tell a new user everything a first pod needs: the opt-in, and a class or inline objects."""

from __future__ import annotations

import subprocess

from tests.chart.rendering import CHART, tool


def notes(*values: str) -> str:
    result = subprocess.run(
        [tool("helm"), "install", "ferry", str(CHART), "--namespace", "ferry-system", "--dry-run=client", *values],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_say_a_pod_must_name_a_class_or_objects_and_where_the_crd_comes_from() -> None:
    text = notes()
    assert "ferry.dev/inject" in text
    assert "ferry.dev/secret-provider-class" in text and "ferry.dev/objects" in text
    assert "secretProviderClassCRD.install=true" in text
    assert "secretProviderClassCRD.install=true" not in notes("--set", "secretProviderClassCRD.install=true")
