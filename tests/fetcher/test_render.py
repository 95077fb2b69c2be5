"""render(): ASCP's file names, bytes and modes, and jmesPath errors that say which object, path and why."""

from __future__ import annotations

import json

import pytest

from fetcher.errors import ObjectErrors, RenderError
from fetcher.render import render
from fetcher.sources import FetchedValue
from tests.support.aws import make_spec

DB_JSON = json.dumps({"username": "admin", "db-pass": "s3cr3t-Value", "port": 5432, "nested": {"host": "db.local"}})


def value(data: str | bytes, *, binary: bool = False) -> FetchedValue:
    raw = data.encode() if isinstance(data, str) else data
    return FetchedValue(raw, "v1", "us-east-1", binary=binary)


def render_errors(spec_objects: list[dict[str, object]], values: dict[int, FetchedValue]) -> list[RenderError]:
    with pytest.raises(ObjectErrors) as caught:
        render(make_spec(spec_objects), values)
    assert all(isinstance(error, RenderError) for error in caught.value.errors)
    return [error for error in caught.value.errors if isinstance(error, RenderError)]


def test_whole_values_and_jmes_selections_become_files_with_their_modes() -> None:
    spec = make_spec(
        [
            {
                "objectName": "prod/db",
                "objectType": "secretsmanager",
                "filePermission": "0640",
                "jmesPath": [
                    {"path": "username", "objectAlias": "db-user"},
                    {"path": '"db-pass"', "objectAlias": "db-pass", "filePermission": "0400"},
                    {"path": "nested.host", "objectAlias": "db-host"},
                ],
            },
            {"objectName": "/app/cert", "objectType": "ssmparameter"},
            {"objectName": "blob", "objectType": "secretsmanager", "objectAlias": "blob.bin"},
        ]
    )
    files = render(spec, {0: value(DB_JSON), 1: value("-----BEGIN-----\n"), 2: value(b"\x00\xff\x01", binary=True)})
    assert files == {
        "prod_db": (DB_JSON.encode(), 0o640),
        "db-user": (b"admin", 0o640),
        "db-pass": (b"s3cr3t-Value", 0o400),
        "db-host": (b"db.local", 0o640),
        "_app_cert": (b"-----BEGIN-----\n", 0o644),
        "blob.bin": (b"\x00\xff\x01", 0o644),
    }


def test_unicode_values_are_written_as_utf8() -> None:
    spec = make_spec(
        [{"objectName": "u", "objectType": "secretsmanager", "jmesPath": [{"path": "k", "objectAlias": "k"}]}]
    )
    files = render(spec, {0: value(json.dumps({"k": "pässwörd ✓"}, ensure_ascii=True))})
    assert files["k"][0] == "pässwörd ✓".encode()


def test_jmes_on_a_value_that_is_not_json_names_the_object_and_why() -> None:
    (error,) = render_errors(
        [
            {
                "objectName": "db",
                "objectType": "secretsmanager",
                "jmesPath": [{"path": "a", "objectAlias": "a"}, {"path": "b", "objectAlias": "b"}],
            }
        ],
        {0: value("plain-text-password")},
    )
    # One error per object, not one per path.
    assert error.object_name == "db"
    assert "jmesPath needs a JSON value, but the value is not JSON (Expecting value at line 1 column 1)" in str(error)
    assert "plain-text-password" not in str(error)


def test_jmes_on_secret_binary_is_refused() -> None:
    (error,) = render_errors(
        [{"objectName": "blob", "objectType": "secretsmanager", "jmesPath": [{"path": "a", "objectAlias": "a"}]}],
        {0: value(b'{"a": "b"}', binary=True)},
    )
    assert "holds SecretBinary" in str(error)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("port", "selects a number, not a string; point it at a string value, or use to_string(...)"),
        ("nested", "selects an object, not a string"),
        ("keys(@)", "selects a list, not a string"),
        ("missing", "matched nothing in a JSON object with 4 top-level key(s); check the key's spelling"),
        ("db_pass", 'a key containing "-" must be quoted in JMESPath'),
    ],
)
def test_jmes_results_must_be_strings(path: str, expected: str) -> None:
    (error,) = render_errors(
        [{"objectName": "db", "objectType": "secretsmanager", "jmesPath": [{"path": path, "objectAlias": "out"}]}],
        {0: value(DB_JSON)},
    )
    assert str(error).startswith(f"object 'db', jmesPath {path!r}: ")
    assert expected in str(error)
    assert "s3cr3t-Value" not in str(error) and "5432" not in str(error)


def test_to_string_writes_the_json_text_of_a_number() -> None:
    spec = make_spec(
        [
            {
                "objectName": "db",
                "objectType": "secretsmanager",
                "jmesPath": [{"path": "to_string(port)", "objectAlias": "p"}],
            }
        ]
    )
    assert render(spec, {0: value(DB_JSON)})["p"] == (b"5432", 0o644)


def test_every_failing_object_is_reported_together() -> None:
    errors = render_errors(
        [
            {"objectName": "a", "objectType": "secretsmanager", "jmesPath": [{"path": "x", "objectAlias": "ax"}]},
            {"objectName": "b", "objectType": "ssmparameter", "jmesPath": [{"path": "y", "objectAlias": "by"}]},
        ],
        {0: value("not json"), 1: value('{"y": 1}')},
    )
    assert [(error.object_name, error.path) for error in errors] == [("a", None), ("b", "y")]


def test_a_jmes_path_on_a_json_ssm_parameter_works() -> None:
    spec = make_spec(
        [{"objectName": "/cfg", "objectType": "ssmparameter", "jmesPath": [{"path": "url", "objectAlias": "url"}]}]
    )
    assert render(spec, {0: value('{"url": "https://x"}')})["url"] == (b"https://x", 0o644)


def test_a_missing_value_is_an_error_not_an_empty_file() -> None:
    (error,) = render_errors([{"objectName": "db", "objectType": "secretsmanager"}], {})
    assert "was not fetched" in str(error)


def test_fetched_values_never_show_their_bytes_in_repr() -> None:
    assert "hunter2" not in repr(value("hunter2")) and "7 bytes" in repr(value("hunter2"))


def test_jmes_on_json_nested_deeper_than_the_decoder_goes_is_a_render_error() -> None:
    """64 KB of '[' (within Secrets Manager's limit) raised RecursionError out of render: a crash, not an error."""
    (error,) = render_errors(
        [{"objectName": "db", "objectType": "secretsmanager", "jmesPath": [{"path": "a", "objectAlias": "a"}]}],
        {0: value("[" * 65_000)},
    )
    assert error.object_name == "db"
    assert "the value is not JSON (nested too deep)" in str(error)


def test_jmes_on_a_lone_surrogate_escape_writes_the_replacement_character() -> None:
    """A jmesPath result holding half a surrogate pair raised UnicodeEncodeError (quoting the character); ASCP's
    Go decoder writes U+FFFD for it, and so does Ferry."""
    jmes = [{"path": "k", "objectAlias": "k"}]
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager", "jmesPath": jmes}])
    files = render(spec, {0: value('{"k": "a\\ud800b"}')})
    assert files["k"][0] == "a\ufffdb".encode()
