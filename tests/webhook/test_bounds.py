"""Each documented bound, tested at its default value, so loosening it fails a test (issue 15, part 5).

The numbers are written here as docs/reliability.md and docs/configuration.md
state them, never imported from the module that enforces them (a constant
cannot be its own oracle), and each test drives the bound through the code
that applies it rather than through an override.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.pods import make_pod
from tests.support.reviews import pod_create_review
from webhook.cluster.kube import WatchCache, slim_namespace
from webhook.edge.app import BodyBudget, create_app
from webhook.edge.connguard import GuardedH11Protocol
from webhook.edge.server import server_config
from webhook.policy import memo
from webhook.policy.memo import BuiltSpec, cache_stats, clear_caches
from webhook.policy.review import build_response
from webhook.policy.view import StaticView
from webhook.settings import Settings

KiB, MiB = 1024, 1024 * 1024


def test_read_deadline_is_three_seconds_by_default(tmp_path: Any) -> None:
    config = server_config(
        create_app(Settings(), StaticView([]), native_sidecars=True),
        host="127.0.0.1",
        port=0,
        cert_file=tmp_path / "c",
        key_file=tmp_path / "k",
        log_level="warning",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=1,
    )
    protocol = config.http
    assert isinstance(protocol, type) and issubclass(protocol, GuardedH11Protocol)
    assert protocol.read_deadline <= 3.0 and GuardedH11Protocol.read_deadline <= 3.0
    # 512 connections served, the asking one counted by uvicorn.
    assert config.limit_concurrency is not None and config.limit_concurrency <= 513
    assert config.timeout_keep_alive <= 5


def test_body_budget_is_64_kib_free_per_body_and_8_mib_shared() -> None:
    budget = BodyBudget()
    assert budget.small_bytes == 64 * KiB
    assert budget.take(8 * MiB) and not budget.take(1)
    budget.give_back(8 * MiB)
    assert budget.take(1)


def test_a_body_past_3_mib_is_refused(asgi_client: Callable[[Any], Any]) -> None:
    client = asgi_client(create_app(Settings(), StaticView([]), native_sidecars=True))
    assert client.post("/mutate", content=b" " * (3 * MiB + 1)).status_code == 413
    assert client.post("/mutate", content=b" " * (3 * MiB)).status_code == 400  # read, then not a review


def test_the_spec_cache_keeps_at_most_512_specs() -> None:
    clear_caches()
    try:
        for index in range(600):
            # The very cache `cached_spec` fills (its keys are typed inputs; any hashable key fills it alike).
            memo._SPECS.get_or_compute(("bounds-test", index), lambda: BuiltSpec(None, "{}"))  # type: ignore[arg-type]
        assert cache_stats()["specs"][2] == 512
    finally:
        clear_caches()


def _parts_of(text_bytes: int) -> Any:
    """Ferry's parts whose JSON texts add up to `text_bytes` (what the parts cache counts)."""
    from webhook.policy.containers import FerryParts, PartTexts

    return FerryParts([], {}, [], [], PartTexts((), "x" * text_bytes, (), ()))


def test_the_parts_cache_keeps_at_most_256_sets_and_4_mib_and_never_one_over_128_kib() -> None:
    clear_caches()
    try:
        # The very cache `cached_parts` fills (its keys are typed inputs; any hashable key fills it alike).
        for index in range(300):
            memo._PARTS.get_or_compute(("bounds-test", index), lambda: _parts_of(KiB))
        assert cache_stats()["parts"][2] == 256
        clear_caches()
        for index in range(100):
            memo._PARTS.get_or_compute(("bounds-test", index), lambda: _parts_of(100 * KiB))
        assert cache_stats()["parts"][2] == 4 * MiB // (100 * KiB) and memo._PARTS.bytes <= 4 * MiB
        clear_caches()
        memo._PARTS.get_or_compute(("bounds-test", "large"), lambda: _parts_of(128 * KiB + 1))
        memo._PARTS.get_or_compute(("bounds-test", "largest kept"), lambda: _parts_of(128 * KiB))
        assert cache_stats()["parts"][2] == 1 and memo._PARTS.bytes == 128 * KiB
    finally:
        clear_caches()


def test_the_admission_memo_keeps_at_most_512_pods(asgi_client: Callable[[Any], Any]) -> None:
    app = create_app(Settings(), StaticView([], [{"metadata": {"name": "team-a"}}]), native_sidecars=True)
    client = asgi_client(app)
    for index in range(530):
        pod = make_pod(None, [{"name": "app", "image": f"app:{index}"}], name="p", namespace="team-a")
        assert client.post("/mutate", content=json.dumps(pod_create_review(pod, namespace="team-a"))).status_code == 200
    assert 0 < len(app.state.memo) <= 512


def test_namespace_annotations_are_cut_to_1024_characters_and_5_unknown_keys() -> None:
    annotations = {"ferry.dev/region": "r" * 5000, **{f"ferry.dev/unknown-{i}": "v" for i in range(20)}}
    kept, _ = slim_namespace({"metadata": {"name": "ns", "annotations": annotations}}, 0)
    kept_annotations = kept["metadata"]["annotations"]
    assert len(kept_annotations["ferry.dev/region"]) == 1024
    assert len([key for key in kept_annotations if key.startswith("ferry.dev/unknown-")]) == 5


def test_warnings_are_at_most_10_of_256_characters() -> None:
    warnings = build_response("uid", warnings=["w" * 1000] * 30)["response"]["warnings"]
    assert len(warnings) == 10
    assert all(len(text) <= 256 for text in warnings)


@pytest.mark.parametrize(("size", "refused"), [(16 * MiB - 64, False), (16 * MiB + 1, True)])
def test_inject_reads_at_most_16_mib(size: int, refused: bool) -> None:
    """`python -m webhook inject` refuses a stream past 16 MiB with a message, and reads one just under."""
    document = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
    manifest = b"# " + b"x" * (size - len(document) - 3) + b"\n" + document
    assert len(manifest) == size
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "inject", "-f", "-"],
        input=manifest,
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    if refused:
        assert result.returncode == 2 and b"error:" in result.stderr, result.stderr[-500:]
        assert len(result.stderr) < 1000
    else:
        assert result.returncode == 0, result.stderr[-500:]


def test_a_denial_reports_at_most_20_problems(asgi_client: Callable[[Any], Any]) -> None:
    """25 bad aliases, each short: the cap on problems (not the one on characters) is what cuts the list."""
    view = StaticView([], [{"metadata": {"name": "team-a"}}])
    client = asgi_client(create_app(Settings(default_region="us-east-1"), view, native_sidecars=True))
    objects = "\n".join(f"- objectName: o{i}\n  objectType: secretsmanager\n  objectAlias: ../x{i}" for i in range(25))
    annotations = {"ferry.dev/inject": "true", "ferry.dev/objects": objects}
    pod = make_pod(annotations, [{"name": "app", "image": "app:1"}], name="p", namespace="team-a")
    answer = client.post("/mutate", content=json.dumps(pod_create_review(pod, namespace="team-a"))).json()
    message = answer["response"]["status"]["message"]
    assert len(message) < 4096 and message.count("objectAlias") == 20, message
    assert "and 5 more problems" in message


def test_the_spc_cache_defaults_to_64_mib() -> None:
    """The default the watch cache runs with (its enforcement is in test_kube.py, with a small override:
    filling 64 MiB through a fake API server costs more than it proves)."""
    default = inspect.signature(WatchCache.__init__).parameters["max_spc_bytes"].default
    assert default <= 64 * MiB
