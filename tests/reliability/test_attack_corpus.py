"""Every case of the attack corpus is denied over TLS, with a message naming what to fix.

Why it exists: Ferry promises that bad input is denied at admission with a message
that says what to fix; the corpus (corpus.py) is the list of ways app teams'
input can hurt the cluster or the app. Each case gets its own test id so a
regression names the attack. The outcome of every case (denied or not, which
expected words were missing) is recorded for the table in docs/reliability.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.leakscan import SecretLedger
from tests.support.pods import make_pod
from tests.support.webhook_server import NAMESPACE, WebhookUnderTest

from .conftest import record_result
from .corpus import CORPUS, CORPUS_SPCS, GOOD, MOUNT, OBJECTS, Case

# Denials reach kubectl and Events; one that echoes a 100 KB annotation back is a problem of its own.
MAX_MESSAGE_CHARS = 4096


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookUnderTest]:
    server = WebhookUnderTest(tmp_path_factory.mktemp("corpus-tls"), spcs=CORPUS_SPCS).start()
    yield server
    server.stop()


def _verdict(webhook: WebhookUnderTest, case: Case) -> tuple[bool, str]:
    containers = case.containers or None
    response = webhook.admit(
        make_pod({"ferry.dev/inject": "true", **case.annotations}, containers, namespace=NAMESPACE)
    )
    message = str((response.get("status") or {}).get("message", ""))
    return response["allowed"], message


@pytest.mark.parametrize("case", CORPUS, ids=[f"{c.category}: {c.name}" for c in CORPUS])
def test_attack_is_denied_naming_the_problem(webhook: WebhookUnderTest, ledger: SecretLedger, case: Case) -> None:
    allowed, message = _verdict(webhook, case)
    ledger.expose(f"denial-message:{case.name}", message)
    missing = [needle for needle in case.expect if needle not in message]
    outcome = "ALLOWED" if allowed else ("denied" if not missing else "denied, message lacks " + ", ".join(missing))
    record_result(
        "attack_corpus",
        f"{case.category}: {case.name}",
        {"category": case.category, "outcome": outcome, "message": _excerpt(message)},
    )
    assert not allowed, f"{case.name} was admitted"
    assert not missing, f"the denial does not mention {missing}: {message!r}"
    assert len(message) <= MAX_MESSAGE_CHARS, f"a {len(message)}-character denial message"


def test_corpus_size(webhook: WebhookUnderTest) -> None:
    """The corpus is what the docs claim: record its size per category."""
    per_category: dict[str, int] = {}
    for case in CORPUS:
        per_category[case.category] = per_category.get(case.category, 0) + 1
    record_result("attack_corpus_size", "cases", per_category | {"total": len(CORPUS)})
    assert len(CORPUS) >= 100


def test_the_good_baseline_is_admitted(webhook: WebhookUnderTest) -> None:
    """Without this, a webhook that denies everything would pass the corpus."""
    response = webhook.admit(make_pod({"ferry.dev/inject": "true", OBJECTS: GOOD}, namespace=NAMESPACE))
    assert response["allowed"] and response.get("patch")
    response = webhook.admit(
        make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "good"}, namespace=NAMESPACE)
    )
    assert response["allowed"] and response.get("patch")


def test_a_suggested_mount_path_is_itself_accepted(webhook: WebhookUnderTest) -> None:
    """A denial that says "use X" must offer an X that works."""
    for path in ("/", "/etc", "/tmp", "/var"):
        _, message = _verdict(webhook, Case("mount path", path, {OBJECTS: GOOD, MOUNT: path}, ()))
        for suggestion in re.findall(r"(?:like|e\.g\.) (\S+)", message):
            suggested = suggestion.rstrip(".;,")
            allowed, again = _verdict(webhook, Case("mount path", suggested, {OBJECTS: GOOD, MOUNT: suggested}, ()))
            assert allowed, f"denying {path!r} suggested {suggested!r}, which is denied too: {again}"


def _excerpt(message: str) -> str:
    text = message.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 110 else text[:107] + "..."


@pytest.fixture(scope="module", autouse=True)
def _scan_metrics_at_end(webhook: WebhookUnderTest, ledger: SecretLedger) -> Iterator[None]:
    yield
    assert webhook.client is not None
    ledger.expose("metrics:corpus", webhook.metrics_text())


def test_a_denial_with_more_to_say_than_the_cap_is_cut_to_it(webhook: WebhookUnderTest) -> None:
    """The 4,096-character cap itself: 30 objects, each with a 200-character bad alias and a 300-character
    unknown key, would make a denial of about 6,700 characters; it is cut to the cap and says so."""
    objects = "\n".join(
        f"- objectName: o{i}\n  objectType: secretsmanager\n  objectAlias: ../{'a' * 200}{i}\n  {'k' * 300}{i}: x"
        for i in range(30)
    )
    allowed, message = _verdict(webhook, Case("oversized", "long denial", {OBJECTS: objects}, ()))
    assert not allowed
    assert len(message) <= 4096, f"a {len(message)}-character denial message"
    cut = re.search(r"\((\d+) more characters cut\)$", message)
    assert cut and len(message) + int(cut.group(1)) > 4096, "the input did not exceed the cap: it tests nothing"
    assert "objectAlias" in message  # still names the field to fix
