"""The dotenv and JSON documents: real shells source them back to the exact bytes; what cannot be is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetcher.contract import spec_from_json, spec_to_json
from fetcher.contract.formats import (
    FormatError,
    add_formats,
    dotenv_document,
    env_key,
    env_keys,
    json_document,
)

SHELLS = [shell for shell in ("dash", "bash") if shutil.which(shell)]

# File names as the spec can produce them (aliases, translated paths, subdirectories).
file_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_./", min_size=1, max_size=20).filter(
    lambda name: not name.startswith("/") and ".." not in name
)
# Any text a secret can hold, but NUL; with the shell's special characters made likely.
_pieces = st.one_of(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    st.sampled_from(["'", '"', "$", "\\", "\n", "`", "$(", "'\\''", "\r", "\t", " ", "!", "*", "#", "="]),
)
values = st.lists(_pieces, max_size=30).map("".join)


def _distinct_keys(files: dict[str, str]) -> bool:
    try:
        env_keys(files)
    except FormatError:
        return False
    return True


def source_in_shell(shell: str, document: bytes, keys: list[str], folder: Path) -> dict[str, bytes]:
    """Source the document with ``set -a`` and return what a child process sees in its environment."""
    path = folder / "values.env"
    path.write_bytes(document)
    script = "set -a; . ./values.env; exec env -0"
    completed = subprocess.run(
        [shell, "-c", script],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        capture_output=True,
        check=True,
        timeout=60,
    )
    environment = dict(entry.split(b"=", 1) for entry in completed.stdout.split(b"\0") if entry)
    return {key: environment[key.encode()] for key in keys if key.encode() in environment}


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(file_names, values, min_size=1, max_size=6).filter(_distinct_keys))
def test_sourcing_the_dotenv_file_gives_back_every_value_exactly(
    shell: str, files: dict[str, str], tmp_path: Path
) -> None:
    encoded = {name: value.encode() for name, value in files.items()}
    keys = env_keys(encoded)

    seen = source_in_shell(shell, dotenv_document(encoded), list(keys), tmp_path)

    assert seen == {key: encoded[name] for key, name in keys.items()}


@pytest.mark.parametrize("shell", SHELLS)
def test_hard_values_round_trip_through_the_shell(shell: str, tmp_path: Path) -> None:
    files = {
        "quotes": b"it's \"quoted\" ''",
        "dollar": b"$HOME ${PATH} $(id) `id` $1",
        "backslash": b"a\\b\\\\c\\'\\n",
        "newlines": b"\nline one\nline two\n\n",
        "empty": b"",
        "utf8": "pässwörd ✓".encode(),
    }
    keys = env_keys(files)

    assert source_in_shell(shell, dotenv_document(files), list(keys), tmp_path) == {
        key: files[name] for key, name in keys.items()
    }


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("db-password", "DB_PASSWORD"),
        ("app/db.url", "APP_DB_URL"),
        ("1st", "_1ST"),
        ("already_OK", "ALREADY_OK"),
        ("ünïcode", "_N_CODE"),
    ],
)
def test_keys_are_derived_from_file_names(name: str, key: str) -> None:
    assert env_key(name) == key


def test_two_files_with_one_key_are_refused_naming_both() -> None:
    with pytest.raises(FormatError) as caught:
        dotenv_document({"db-password": b"a", "db_password": b"b"})
    assert "'db-password'" in str(caught.value) and "'db_password'" in str(caught.value)
    assert "DB_PASSWORD" in str(caught.value) and "objectAlias" in str(caught.value)


def test_a_file_that_would_set_path_is_refused() -> None:
    with pytest.raises(FormatError, match=r"'path' would set the shell variable PATH"):
        dotenv_document({"path": b"/evil"})


@pytest.mark.parametrize("builder", [dotenv_document, json_document])
def test_binary_values_are_refused_naming_the_file_and_never_the_value(builder: object) -> None:
    assert callable(builder)
    with pytest.raises(FormatError) as caught:
        builder({"cert.der": b"\x30\x82\xff\xfe-secret-bytes", "ok": b"fine"})
    message = str(caught.value)
    assert "'cert.der'" in message and "not UTF-8" in message
    assert "secret-bytes" not in message and "'ok'" not in message


def test_a_nul_byte_is_refused_for_dotenv_but_kept_in_json() -> None:
    with pytest.raises(FormatError, match=r"file 'token' holds a NUL byte"):
        dotenv_document({"token": b"a\0b"})
    assert json.loads(json_document({"token": b"a\0b"})) == {"token": "a\x00b"}


def test_refusal_messages_stay_bounded_however_many_files_fail() -> None:
    files = {f"blob-{index}": b"\xff" for index in range(500)}
    with pytest.raises(FormatError) as caught:
        json_document(files)
    assert "and 492 more" in str(caught.value) and len(str(caught.value)) < 600


@settings(max_examples=100, deadline=None)
@given(files=st.dictionaries(file_names, values, max_size=8))
def test_the_json_document_holds_every_file_value(files: dict[str, str]) -> None:
    encoded = {name: value.encode() for name, value in files.items()}
    document = json_document(encoded)
    assert json.loads(document.decode("utf-8")) == files
    assert document.endswith(b"\n")


def test_formats_join_the_file_set_with_the_requested_names_and_mode() -> None:
    files = {"db-password": (b"pw", 0o644), "sub/url": (b"https://x", 0o600)}

    result = add_formats(files, {"dotenv": "secrets.env", "json": "secrets.json"}, 0o640)

    assert result["db-password"] == files["db-password"]
    assert result["secrets.env"] == (b"DB_PASSWORD='pw'\nSUB_URL='https://x'\n", 0o640)
    assert json.loads(result["secrets.json"][0]) == {"db-password": "pw", "sub/url": "https://x"}
    assert result["secrets.json"][1] == 0o640


def test_a_format_file_name_that_is_taken_is_refused() -> None:
    with pytest.raises(FormatError, match=r"'db-password' is already used"):
        add_formats({"db-password": (b"pw", 0o644)}, {"json": "db-password"}, 0o644)
    with pytest.raises(FormatError, match=r"unknown output format 'yaml'"):
        add_formats({}, {"yaml": "x.yaml"}, 0o644)


# --- Issue 15 part 3: document names follow the path rules; the reserved list closes shell and loader names. ---


DB = [{"objectName": "db", "objectType": "secretsmanager"}]


@pytest.mark.parametrize("raw", ["dotenv=..data", "json=..ferry-status", "json=..2026_01_01", "dotenv=..", "json=a/b"])
def test_a_document_name_that_breaks_the_path_rules_is_refused_at_admission(raw: str) -> None:
    from fetcher.contract import SpecError, build_spec

    with pytest.raises(SpecError) as caught:
        build_spec(objects=DB, region="eu-west-1", output_formats=raw)
    assert "outputFormats" in str(caught.value) and "plain file name" in str(caught.value)


@pytest.mark.parametrize("name", ["..data", "..ferry-status", "..", "", "a/b"])
def test_a_document_name_that_breaks_the_path_rules_is_refused_at_fetch(name: str) -> None:
    from fetcher.contract import SpecError, build_spec

    spec = build_spec(objects=[{"objectName": "db", "objectType": "secretsmanager"}], region="us-east-1")
    wire = json.loads(spec_to_json(spec))
    wire["outputFormats"] = {"json": name}
    with pytest.raises(SpecError, match="plain file name"):
        spec_from_json(json.dumps(wire))  # what the init container does with FERRY_SPEC
    with pytest.raises(FormatError, match="plain file name"):
        add_formats({"db": (b"pw", 0o644)}, {"json": name}, 0o644)


@pytest.mark.parametrize(
    "name",
    [
        "execignore",
        "globignore",
        "ld-preload",
        "ld_audit",
        "ld-anything-new",
        "gconv_path",
        "glibc_tunables",
        "malloc_check_",
        "bash_env",
        "env",
        "tmpdir",
        "localdomain",
        "res_options",
        "nlspath",
        "hostaliases",
        "shellopts",
        "tmout",
        "prompt_command",
        "histfile",
    ],
)
def test_a_file_that_would_set_a_shell_or_loader_variable_is_refused(name: str) -> None:
    with pytest.raises(FormatError, match="would set the shell variable"):
        dotenv_document({name: b"*"})


@pytest.mark.skipif("bash" not in SHELLS, reason="bash is not installed")
def test_execignore_sourced_from_a_dotenv_file_would_break_the_apps_exec(tmp_path: Path) -> None:
    """Why EXECIGNORE is closed: sourced before `exec`, it hides every program from the shell."""
    (tmp_path / "values.env").write_text("EXECIGNORE='*'\n")
    done = subprocess.run(
        ["bash", "-c", "set -a; . ./values.env; set +a; exec true"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0


@pytest.mark.parametrize(
    "name", ["pythonpath", "node_options", "lang", "tz", "https_proxy", "db-password", "history", "ldap-url", "compass"]
)
def test_runtime_and_app_variables_stay_the_apps_business(name: str) -> None:
    assert env_key(name) in dotenv_document({name: b"value"}).decode()
