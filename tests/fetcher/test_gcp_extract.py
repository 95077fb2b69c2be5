"""extractJSONKey / extractYAMLKey read a value as the GCP provider does (Go's encoding/json, gopkg.in/yaml.v3).

The provider unmarshals the payload into map[string]any: Go writes U+FFFD for each byte of invalid UTF-8
inside a JSON string, refuses a byte-order mark, NaN and numbers out of float64's range, and yaml.v3 refuses
a mapping key given twice. Each case against the loopback fake over TLS, through fetch_all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher.contract import FetchSpec, build_spec
from fetcher.errors import ObjectErrors
from fetcher.gcp import GcpClients, Https, http_settings
from fetcher.gcp_source import fetch_all
from tests.support.gcpfake import POOL, PROVIDER, GcpFake, ksa_token

PROJECT = "ferry-test"
NAME = f"projects/{PROJECT}/secrets/doc/versions/latest"


@pytest.fixture
def extract(tmp_path: Path) -> Iterator[object]:
    token = tmp_path / "token"
    token.write_text(ksa_token("apps", "web"))
    with GcpFake() as fake:
        fake.grant("apps/web", f"projects/{PROJECT}/")

        def run(payload: bytes, kind: str = "extractJSONKey", key: str = "user") -> bytes:
            fake.add_version(PROJECT, "doc", payload)
            spec = gcp_spec({kind: key})
            assert spec.gcp is not None
            https = Https(fake.url, http_settings({"SSL_CERT_FILE": str(fake.ca_file)}))
            clients = GcpClients(spec.gcp, https, str(token))
            try:
                return fetch_all(spec, clients)[0].data
            finally:
                clients.close()

        yield run


def gcp_spec(extra: dict[str, str]) -> FetchSpec:
    identity = {"workloadPool": POOL, "identityProvider": PROVIDER}
    return build_spec(
        objects=[{"resourceName": NAME, "path": "f", **extra}], region=None, provider="gcp", gcp_identity=identity
    )


def refused(run: object, payload: bytes, kind: str = "extractJSONKey") -> str:
    with pytest.raises(ObjectErrors) as caught:
        run(payload, kind)  # type: ignore[operator]
    return str(caught.value)


@pytest.mark.parametrize(
    ("payload", "written"),
    [
        (b'{"user": "a\xffb"}', "a\ufffdb"),
        (b'{"user": "\xe2\x82"}', "\ufffd\ufffd"),  # a cut sequence: one U+FFFD per byte, as Go writes it
        (b'{"user": "\xed\xa0\x80x"}', "\ufffd\ufffd\ufffdx"),  # an encoded surrogate is invalid UTF-8
        (b'{"user": "ok\xc3\xa9", "other": "\xff"}', "ok\u00e9"),
    ],
)
def test_invalid_utf8_inside_a_json_string_is_written_as_u_fffd(extract: object, payload: bytes, written: str) -> None:
    assert extract(payload) == written.encode()  # type: ignore[operator]


def test_invalid_utf8_outside_a_string_is_not_json(extract: object) -> None:
    assert "is not JSON" in refused(extract, b'{"user": "a"}\xff')


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'\xef\xbb\xbf{"user": "u"}', "byte-order mark"),
        (b'{"user": "u", "n": NaN}', "NaN"),
        (b'{"user": "u", "n": -Infinity}', "Infinity"),
        (b'{"user": "u", "n": 1e400}', "out of range"),
        (b'{"user": "u", "n": 1' + b"0" * 400 + b"}", "out of range"),
    ],
)
def test_what_go_refuses_in_json_is_refused_naming_why(extract: object, payload: bytes, reason: str) -> None:
    message = refused(extract, payload)
    assert "is not JSON" in message and reason in message and "extractJSONKey" in message
    assert '"u"' not in message


@pytest.mark.parametrize(
    "payload",
    [
        b"user: a\nuser: b\n",
        b"user: a\n'user': b\n",  # yaml.v3 compares the keys' text, quoted or not
        b"user: a\nother: {x: 1, x: 2}\n",  # any mapping in the document
        b"user: a\nlist:\n  - {k: 1, k: 1}\n",
    ],
)
def test_a_yaml_key_given_twice_is_refused_as_yaml_v3_does(extract: object, payload: bytes) -> None:
    message = refused(extract, payload, "extractYAMLKey")
    assert "is not YAML" in message and "key is given twice" in message


def test_yaml_keeps_what_yaml_v3_accepts(extract: object) -> None:
    assert extract(b"\xef\xbb\xbfuser: a\n", "extractYAMLKey") == b"a"  # type: ignore[operator]
    assert extract(b"user: a\nUser: b\nnested: {k: 1, K: 2}\n", "extractYAMLKey") == b"a"  # type: ignore[operator]
    assert extract(b'{"user": "last", "x": 1}', "extractJSONKey") == b"last"  # type: ignore[operator]
    assert extract(b'{"user": "first", "user": "last"}', "extractJSONKey") == b"last"  # type: ignore[operator]
