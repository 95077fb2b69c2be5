"""The ServiceAccount view: one bounded annotation per (namespace, name), and the short GET on a miss.

The list/watch itself runs against the real kube-apiserver in tests/e2e/test_ksa_apiserver.py; here the
view's own rules: what is kept (and how little), names never mixed across namespaces, and the GET on a miss
bounded in rate, time and memory, never answering for a ServiceAccount it could not read.
"""

from __future__ import annotations

import json
import threading
import tracemalloc
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.cluster import serviceaccounts
from webhook.cluster.serviceaccounts import (
    MAX_VALUE_CHARS,
    ServiceAccountView,
    slim_metadata,
    slim_service_account,
)

GSA = "web@my-project.iam.gserviceaccount.com"


def service_account(namespace: str, name: str, value: str | None = None, **more: str) -> dict[str, Any]:
    annotations = {**more, **({"iam.gke.io/gcp-service-account": value} if value is not None else {})}
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "5",
            "annotations": annotations,
            "managedFields": [{"manager": "kubectl"}],
        },
    }


class _Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class FakeCore:
    """CoreV1Api's two calls the view makes; GETs answer from `objects`, or raise `error`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.error: Exception | None = None
        self.gets: list[tuple[str, str, dict[str, Any]]] = []

    def list_service_account_for_all_namespaces(self, **kwargs: Any) -> Any:
        raise AssertionError("not listed in these tests")

    def read_namespaced_service_account(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.gets.append((namespace, name, kwargs))
        if self.error is not None:
            raise self.error
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="Not Found")
        return _Response(obj)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_view(core: FakeCore, clock: Clock, *objects: dict[str, Any]) -> ServiceAccountView:
    common = {
        "stop": threading.Event(),
        "backoff_initial": 0.01,
        "backoff_max": 0.1,
        "watch_timeout": 1.0,
        "request_timeout": 1.0,
    }
    view = ServiceAccountView(core, common=common, clock=clock)  # type: ignore[arg-type]
    items: dict[Any, dict[str, Any]] = {}
    sizes: dict[Any, int] = {}
    for obj in objects:
        view.reflector._keep(obj, items, sizes, 0)  # what a list does with each item
    view.reflector.items = items
    view.reflector.synced.set()
    return view


ROOM = 1 << 30  # bytes the view may still spend: plenty


def test_only_the_one_annotation_is_kept_and_unannotated_accounts_share_one_empty_entry() -> None:
    big = "x" * 100_000
    annotated = slim_metadata(service_account("a", "web", GSA, **{"kubectl.kubernetes.io/last-applied": big}))
    kept, size = slim_service_account(annotated, ROOM)
    assert kept == {"gsa": GSA} and size < 600  # the 100 KB annotation beside it counts for nothing
    plain_1, size_1 = slim_service_account(slim_metadata(service_account("a", "x", None, note=big)), ROOM)
    plain_2, _ = slim_service_account(slim_metadata(service_account("b", "y")), ROOM)
    assert plain_1 == {} and plain_1 is plain_2 and size_1 < 300  # the key only
    huge, huge_size = slim_service_account(slim_metadata(service_account("a", "w", "y" * 1_000_000)), ROOM)
    assert len(huge["gsa"]) == MAX_VALUE_CHARS and huge_size < 800
    padded, _ = slim_service_account(slim_metadata(service_account("a", "p", f" {GSA}\n")), ROOM)
    assert padded == {"gsa": f" {GSA}\n"}  # kept as written, so validation names it rather than fixing it
    empty, _ = slim_service_account(slim_metadata(service_account("a", "e", "")), ROOM)
    assert empty == {}
    assert slim_service_account(annotated, size - 1) == (None, 0)  # past the view's bound: not kept at all


def test_lookups_never_mix_namespaces() -> None:
    view = make_view(FakeCore(), Clock(), service_account("team-a", "web", GSA), service_account("team-b", "web"))
    assert view.lookup("team-a", "web").value == GSA
    assert view.lookup("team-b", "web").value is None and view.lookup("team-b", "web").unread is None
    other = make_view(FakeCore(), Clock(), service_account("team-a", "web", GSA))
    core = FakeCore()
    other._core = core  # type: ignore[assignment]
    assert other.lookup("team-c", "web").value is None  # a miss is read from team-c only
    assert [(ns, name) for ns, name, _ in core.gets] == [("team-c", "web")]


def test_a_miss_is_read_with_one_short_metadata_get_and_remembered() -> None:
    core, clock = FakeCore(), Clock()
    view = make_view(core, clock)
    core.objects[("apps", "new")] = service_account("apps", "new", GSA)
    assert view.lookup("apps", "new").value == GSA
    assert view.lookup("apps", "new").value == GSA
    assert len(core.gets) == 1
    _, _, kwargs = core.gets[0]
    assert kwargs["_request_timeout"] == serviceaccounts.GET_TIMEOUT and sum(serviceaccounts.GET_TIMEOUT) <= 1.0
    assert "as=PartialObjectMetadata" in kwargs["_headers"]["Accept"]
    # An absent one is remembered briefly, then asked again (it may have been created since).
    assert view.lookup("apps", "gone").value is None
    assert view.lookup("apps", "gone").value is None and len(core.gets) == 2
    clock.now += serviceaccounts.ABSENT_TTL + 1
    assert view.lookup("apps", "gone").value is None and len(core.gets) == 3


def test_misses_are_rate_limited_and_a_failing_api_server_is_left_alone() -> None:
    core, clock = FakeCore(), Clock()
    view = make_view(core, clock)
    answers = [view.lookup("apps", f"sa-{i}") for i in range(50)]  # a burst of distinct names (forged reviews)
    assert len(core.gets) == serviceaccounts.NAMESPACE_GET_BURST  # one namespace spends only its own share
    refused = answers[-1]
    assert refused.value is None and refused.unread is not None
    assert refused.name == "sa-49" and "retry" in refused.unread
    assert view.lookup("other", "web").unread is None  # another tenant's miss is still read
    for i in range(50):  # many namespaces at once: the shared budget holds
        view.lookup(f"ns-{i}", "web")
    assert len(core.gets) == serviceaccounts.GET_BURST
    clock.now += 1.0
    view.lookup("apps", "later")
    assert len(core.gets) == serviceaccounts.GET_BURST + 1  # tokens come back with time

    failing, clock2 = FakeCore(), Clock()
    view2 = make_view(failing, clock2)
    failing.error = TimeoutError("read timed out")
    first = view2.lookup("apps", "web")
    assert first.unread is not None and "did not answer" in first.unread
    failing.error = None
    failing.objects[("apps", "web")] = service_account("apps", "web", GSA)
    assert view2.lookup("apps", "web").unread is not None and len(failing.gets) == 1  # paused
    clock2.now += serviceaccounts.GET_PAUSE_AFTER_FAILURE + 1
    assert view2.lookup("apps", "web").value == GSA


def test_a_namespace_the_view_does_not_know_is_never_asked_about() -> None:
    core = FakeCore()
    view = make_view(core, Clock())
    answer = view.lookup("made-up", "web", namespace_known=False)
    assert answer.unread is not None and "namespace is not known" in answer.unread and core.gets == []


def test_forbidden_is_a_failure_never_an_absent_account() -> None:
    core, clock = FakeCore(), Clock()
    view = make_view(core, clock)
    core.error = ApiException(status=403, reason="Forbidden")
    assert view.lookup("apps", "web").unread is not None


def test_names_that_are_not_service_account_names_are_never_asked_for() -> None:
    core = FakeCore()
    view = make_view(core, Clock())
    for name in ("../other-ns/web", "Web", "a" * 300, "web/status", ""):
        answer = view.lookup("apps", name)
        assert answer.unread is not None and len(answer.unread) < 300 and len(answer.name) < 80
    assert core.gets == []


def test_before_the_first_list_nothing_is_answered_as_known() -> None:
    core = FakeCore()
    view = make_view(core, Clock())
    view.reflector.synced.clear()
    assert view.lookup("apps", "web").unread is not None and core.gets == []


def test_remembered_gets_are_bounded() -> None:
    core, clock = FakeCore(), Clock()
    view = make_view(core, clock)
    for i in range(serviceaccounts.MAX_REMEMBERED + 50):
        clock.now += 1.0  # a token each time
        view.lookup("apps", f"sa-{i}")
    assert len(view._remembered) == serviceaccounts.MAX_REMEMBERED


def test_ten_thousand_service_accounts_cost_little_memory() -> None:
    """Bytes held per kept ServiceAccount (tracemalloc), a tenth of them annotated with a handful of accounts."""
    objects = [
        service_account(
            f"ns-{i % 500}", f"sa-{i}", f"app-{i % 7}@p-{i % 3}x.iam.gserviceaccount.com" if i % 10 == 0 else None
        )
        for i in range(10_000)
    ]
    core = FakeCore()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    view = make_view(core, Clock(), *objects)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(view.reflector.items) == 10_000
    print(f"{held / 10_000:.0f} bytes per ServiceAccount")
    assert held / 10_000 < 400, f"{held / 10_000:.0f} bytes per ServiceAccount"


def test_a_forbidden_list_keeps_admission_going_and_says_what_to_grant() -> None:
    """RBAC missing on a GCP install: the view counts as listed (the webhook stays ready for every other pod),
    and each lookup says what grant is missing, with no GET (it would be forbidden too)."""
    from webhook.cluster.reflector import Reflector

    core = FakeCore()
    view = make_view(core, Clock())
    view.reflector.synced.clear()
    reflector: Reflector = view.reflector
    delay = reflector._delay_after(ApiException(status=403, reason="Forbidden"), 1)
    assert delay > 0 and reflector.synced.is_set() and reflector.absent
    answer = view.lookup("apps", "web")
    assert answer.value is None and answer.unread is not None
    assert "get, list and watch on serviceaccounts" in answer.unread and "retry" not in answer.unread
    assert core.gets == []


def test_a_get_answer_still_fresh_is_given_without_a_get_too() -> None:
    """`may_get=False` (the admission memo's first question) costs no GET, but a GET's answer still fresh counts."""
    core, clock = FakeCore(), Clock()
    view = make_view(core, clock)
    core.objects[("apps", "new")] = service_account("apps", "new", GSA)
    assert view.lookup("apps", "new", may_get=False).unread is not None and core.gets == []
    assert view.lookup("apps", "new").value == GSA and len(core.gets) == 1
    again = view.lookup("apps", "new", may_get=False)
    assert (again.value, again.unread, again.settled) == (GSA, None, True) and len(core.gets) == 1
    clock.now += serviceaccounts.FOUND_TTL + 1
    assert view.lookup("apps", "new", may_get=False).unread is not None and len(core.gets) == 1


def test_only_answers_no_read_can_change_are_settled() -> None:
    """An unread account a later read may still deliver is unsettled; a forbidden list or a bad name is final."""
    core = FakeCore()
    view = make_view(core, Clock())
    assert not view.lookup("apps", "web", may_get=False).settled  # the watch may deliver it yet
    assert view.lookup("apps", "Not A Name").settled
    view.reflector.absent = True  # what a forbidden list leaves
    forbidden = view.lookup("apps", "web")
    assert forbidden.unread is not None and forbidden.final and forbidden.settled and core.gets == []
