"""The GCP source against the loopback fake, over TLS: provider SPCs, latest, aliases, errors, identity, refresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fetcher.contract import FetchSpec, build_spec, spec_from_json, spec_from_secret_provider_class, spec_to_json
from fetcher.errors import ObjectErrors
from fetcher.gcp import GcpClients, GcpIdentityError, Https, http_settings
from fetcher.gcp_source import check_versions, crc32c, fetch_all
from fetcher.loop import RefreshState, refresh_once
from fetcher.render import render
from tests.support.fetch import fetcher_env, run_init
from tests.support.gcpfake import POOL, PROVIDER, GcpFake, ksa_token
from tests.support.paths import REPO_ROOT

PROJECT = "ferry-test"
IDENTITY = {"workloadPool": POOL, "identityProvider": PROVIDER}
# The GCP provider's examples/app-secrets-with-extract-key.yaml.tmpl (v1.15.0), $PROJECT_ID filled in.
PROVIDER_EXAMPLE = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app-secrets-with-extract-key
spec:
  provider: gcp
  parameters:
    secrets: |
      - resourceName: "projects/$PROJECT_ID/secrets/testsecret/versions/latest"
        path: "good1.txt"
        extractJSONKey: "user"
      - resourceName: "projects/$PROJECT_ID/locations/us-central1/secrets/testsecret/versions/latest"
        path: "good2.txt"
        extractJSONKey: "user"
""".replace("$PROJECT_ID", PROJECT)


@pytest.fixture
def fake() -> Iterator[GcpFake]:
    with GcpFake() as served:
        served.grant("apps/web", f"projects/{PROJECT}/")
        yield served


_opened: list[GcpClients] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def clients_for(fake: GcpFake, spec: FetchSpec, token_file: Path) -> GcpClients:
    assert spec.gcp is not None
    https = Https(fake.url, http_settings({"SSL_CERT_FILE": str(fake.ca_file)}))
    clients = GcpClients(spec.gcp, https, str(token_file))
    _opened.append(clients)
    return clients


def spec_of(secrets: list[dict[str, Any]] | str, **identity: str) -> FetchSpec:
    manifest = yaml.safe_load(PROVIDER_EXAMPLE)
    manifest["spec"]["parameters"]["secrets"] = secrets if isinstance(secrets, str) else yaml.safe_dump(secrets)
    return spec_from_secret_provider_class(manifest, gcp_identity={**IDENTITY, **identity})


def errors_of(spec: FetchSpec, clients: GcpClients) -> str:
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(spec, clients)
    return str(caught.value)


def test_the_providers_example_fetches_global_and_regional_secrets(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "testsecret", '{"user": "old"}')
    fake.add_version(PROJECT, "testsecret", '{"user": "global-user", "pass": "x"}')
    fake.add_version(PROJECT, "testsecret", '{"user": "regional-user"}', location="us-central1")
    spec = spec_from_secret_provider_class(yaml.safe_load(PROVIDER_EXAMPLE), gcp_identity=IDENTITY)
    values = fetch_all(spec, clients_for(fake, spec, token_file))
    assert values[0].data == b"global-user" and values[0].version == "2" and values[0].region == "global"
    assert values[1].data == b"regional-user" and values[1].version == "1" and values[1].region == "us-central1"
    assert fake.calls["secretmanager.us-central1.rep.googleapis.com AccessSecretVersion"] == 1
    assert fake.calls["secretmanager.googleapis.com AccessSecretVersion"] == 1
    assert fake.count("ExchangeToken") == 1


def test_aliases_and_numbers_resolve_to_version_numbers(fake: GcpFake, token_file: Path) -> None:
    for value in ("one", "two", "three"):
        fake.add_version(PROJECT, "db", value)
    fake.set_alias(PROJECT, "db", "stable", 2)
    spec = spec_of(
        [
            {"resourceName": f"projects/{PROJECT}/secrets/db/versions/stable", "path": "stable"},
            {"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "fileName": "first", "mode": 0o400},
        ]
    )
    values = fetch_all(spec, clients_for(fake, spec, token_file))
    assert (values[0].data, values[0].version) == (b"two", "2")
    assert (values[1].data, values[1].version) == (b"one", "1")
    assert spec.objects[1].file_permission == 0o400


def test_disabled_latest_is_failed_precondition_naming_resource_status_and_fix(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    fake.add_version(PROJECT, "db", "two")
    fake.set_state(PROJECT, "db", 2, "DISABLED")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db"}])
    message = errors_of(spec, clients_for(fake, spec, token_file))
    assert f"projects/{PROJECT}/secrets/db/versions/latest" in message
    assert "FAILED_PRECONDITION (HTTP 400)" in message
    assert "pin an enabled version number" in message


def test_a_missing_secret_is_403_or_it_may_not_exist(fake: GcpFake, token_file: Path) -> None:
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/nope/versions/latest", "path": "db"}])
    message = errors_of(spec, clients_for(fake, spec, token_file))
    assert "PERMISSION_DENIED (HTTP 403)" in message and "(or it may not exist)" in message
    assert "roles/secretmanager.secretAccessor" in message


def test_a_checksum_mismatch_is_refused(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "db", "value")
    fake.corrupt_crc = True
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}])
    assert "DATA_LOSS" in errors_of(spec, clients_for(fake, spec, token_file))


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_extract_key_errors_name_the_key_never_the_value(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "db", '{"user": {"nested": "hunter2"}}')
    fake.add_version(PROJECT, "plain", "hunter2-plain")
    spec = spec_of(
        [
            {"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "a", "extractJSONKey": "user"},
            {"resourceName": f"projects/{PROJECT}/secrets/plain/versions/1", "path": "b", "extractYAMLKey": "k"},
        ]
    )
    message = errors_of(spec, clients_for(fake, spec, token_file))
    assert "'user' is not a string" in message and "has no top-level key 'k'" in message
    assert "hunter2" not in message


def test_an_unchanged_refresh_costs_one_versions_get_per_moving_secret_and_writes_nothing(
    fake: GcpFake, token_file: Path, tmp_path: Path
) -> None:
    fake.add_version(PROJECT, "db", "one")
    fake.add_version(PROJECT, "pinned", "p")
    spec = spec_of(
        [
            {"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db"},
            {"resourceName": f"projects/{PROJECT}/secrets/pinned/versions/1", "path": "pinned"},
        ]
    )
    state = RefreshState(spec=spec, clients=clients_for(fake, spec, token_file), target_dir=tmp_path / "out")
    (tmp_path / "out").mkdir()
    refresh_once(state)
    fake.calls.clear()
    before = os.readlink(tmp_path / "out" / "..data")
    outcome = refresh_once(state)
    assert outcome.changed == () and not outcome.swapped
    assert dict(fake.calls) == {"secretmanager.googleapis.com GetSecretVersion": 1}
    assert os.readlink(tmp_path / "out" / "..data") == before  # no new generation: nothing written
    fake.add_version(PROJECT, "db", "two")
    outcome = refresh_once(state)
    assert outcome.changed == (f"projects/{PROJECT}/secrets/db/versions/latest",)
    assert (tmp_path / "out" / "db").read_text() == "two" and state.values[0].version == "2"


def test_an_exhausted_read_quota_falls_back_to_an_access(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db"}])
    clients = clients_for(fake, spec, token_file)
    fake.failures[:] = [429] * 4  # every retry of the versions.get
    probes = check_versions(spec, clients)
    assert probes[0].version == "1" and probes[0].value is not None and probes[0].value.data == b"one"
    assert fake.count("AccessSecretVersion") == 1


def test_a_503_is_retried(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    fake.failures[:] = [503, 503]
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db"}])
    assert fetch_all(spec, clients_for(fake, spec, token_file))[0].data == b"one"


def test_impersonation_needs_the_workload_identity_user_binding(fake: GcpFake, token_file: Path) -> None:
    account = "reader@ferry-test.iam.gserviceaccount.com"
    fake.add_version(PROJECT, "db", "one")
    fake.grants.clear()
    fake.grant(account, f"projects/{PROJECT}/secrets/db")
    spec = spec_of(
        [{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}], serviceAccount=account
    )
    with pytest.raises(GcpIdentityError, match="roles/iam.workloadIdentityUser"):
        fetch_all(spec, clients_for(fake, spec, token_file))
    fake.allow_impersonation("apps/web", account)
    assert fetch_all(spec, clients_for(fake, spec, token_file))[0].data == b"one"


def test_tokens_are_renewed_before_they_expire(fake: GcpFake, token_file: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}])
    clients = clients_for(fake, spec, token_file)
    fetch_all(spec, clients)
    fetch_all(spec, clients)
    assert fake.count("ExchangeToken") == 1  # an hour's token is reused
    fake.token_lifetime = 240  # under the five minutes of margin: renewed at every use
    fresh = clients_for(fake, spec, token_file)
    fetch_all(spec, fresh)
    fetch_all(spec, fresh)
    assert fake.count("ExchangeToken") >= 3  # one more exchange per fetch at least


def test_a_token_with_the_wrong_audience_is_refused_clearly(fake: GcpFake, tmp_path: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    wrong = tmp_path / "token"
    wrong.write_text(ksa_token("apps", "web", audience="https://kubernetes.default.svc"))
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}])
    with pytest.raises(GcpIdentityError, match="security token endpoint refused"):
        fetch_all(spec, clients_for(fake, spec, wrong))


def _gcp_env(fake: GcpFake, spec: FetchSpec, token_file: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "FERRY_", "GCE_"))}
    env.update(fake.env(token_file), FERRY_SPEC=spec_to_json(spec), PYTHONPATH=str(REPO_ROOT))
    # If anything fell back to the metadata server (as google-auth does), it would land on the fake and be counted.
    env["GCE_METADATA_HOST"] = env["GCE_METADATA_IP"] = fake.url.removeprefix("https://") + "/metadata.google.internal"
    return env


def test_a_pod_without_a_usable_identity_fails_clearly_and_never_asks_the_node(fake: GcpFake, tmp_path: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}])
    run = run_init(_gcp_env(fake, spec, tmp_path / "missing"), tmp_path / "out", tmp_path / "termination")
    assert run.returncode == 1, run.stderr
    assert "no Workload Identity token" in run.termination and "never falls back to the node's" in run.termination
    assert fake.count("Metadata") == 0 and fake.count("AccessSecretVersion") == 0
    assert not (tmp_path / "out" / "db").exists()


def test_init_in_a_process_loads_nothing_of_aws_and_leaks_no_value(
    fake: GcpFake, token_file: Path, tmp_path: Path
) -> None:
    fake.add_version(PROJECT, "db", "s3cr3t-value")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db"}])
    env = _gcp_env(fake, spec, token_file)
    probe = (
        "import json, sys; from fetcher.__main__ import main; code = main(['init', '--dir', sys.argv[1]]); "
        "roots = ('boto3', 'botocore', 'fetcher'); "
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in roots)]))"
    )
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=60
    )
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0, done.stderr
    assert (tmp_path / "out" / "db").read_text() == "s3cr3t-value"
    assert [m for m in loaded if m.startswith(("boto3", "botocore"))] == []
    # Nor Ferry's own AWS client: the shared transport and retry policy are all the two clouds have in common.
    aws_modules = ("aws", "awscreds", "awsendpoints", "awsroles", "awswire", "sigv4", "sources", "callplan")
    assert [m for m in loaded if m.split(".")[-1] in aws_modules] == [], loaded
    assert {"fetcher.gcp", "fetcher.gcp_source", "fetcher.transport", "fetcher.retry"} <= set(loaded)
    assert "s3cr3t-value" not in done.stderr
    assert '"version": "1"' in done.stderr or "version=1" in done.stderr or '"version":"1"' in done.stderr


def test_an_aws_init_loads_nothing_of_gcp(moto_server: Any, tmp_path: Path) -> None:
    moto_server.reset()
    moto_server.client().create_secret(Name="app/db", SecretString='{"username": "u", "password": "p"}')
    spec = build_spec(objects=[{"objectName": "app/db", "objectType": "secretsmanager"}], region="us-east-1")
    env = fetcher_env(moto_server.url, spec)
    probe = (
        "import json, sys; from fetcher.__main__ import main; code = main(['init', '--dir', sys.argv[1]]); "
        "print(json.dumps([code, sorted(m for m in sys.modules if 'gcp' in m)]))"
    )
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=60
    )
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0, done.stderr
    assert loaded == [], (
        loaded
    )  # not fetcher.gcp, fetcher.gcp_source, nor fetcher.contract.gcp's callers beyond the model


def test_provider_agnostic_features_apply_to_gcp_specs(fake: GcpFake, token_file: Path, tmp_path: Path) -> None:
    fake.add_version(PROJECT, "db", "pass-1")
    fake.add_version(PROJECT, "user", "app")
    manifest = yaml.safe_load(PROVIDER_EXAMPLE)
    manifest["spec"]["parameters"]["secrets"] = yaml.safe_dump(
        [
            {"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db-password", "mode": 0o440},
            {"resourceName": f"projects/{PROJECT}/secrets/user/versions/1", "path": "db-user"},
        ]
    )
    manifest["spec"]["parameters"]["outputFormats"] = "dotenv"
    manifest["spec"]["secretObjects"] = [
        {"secretName": "db", "type": "Opaque", "data": [{"objectName": "db-password", "key": "password"}]}
    ]
    spec = spec_from_secret_provider_class(manifest, gcp_identity=IDENTITY, file_uid=1000, file_gid=2000)
    assert spec.secret_objects[0].data[0].object_name == "db-password"
    assert spec_from_json(spec_to_json(spec)) == spec
    files = render(spec, fetch_all(spec, clients_for(fake, spec, token_file)))
    assert files["db-password"] == (b"pass-1", 0o440)
    assert b"DB_PASSWORD" in files["secrets.env"][0] or b"db_password" in files["secrets.env"][0].lower()


def test_parameter_manager_versions_render_and_a_moved_reference_is_a_new_version(
    fake: GcpFake, token_file: Path
) -> None:
    key = (PROJECT, "us-central1", "app-config", "v1")
    fake.parameters[key] = b'{"db": "host-a"}'
    name = f"projects/{PROJECT}/locations/us-central1/parameters/app-config/versions/v1"
    spec = spec_of([{"resourceName": name, "path": "db-host", "extractJSONKey": "db"}])
    clients = clients_for(fake, spec, token_file)
    first = fetch_all(spec, clients)[0]
    assert first.data == b"host-a"
    assert fake.calls["parametermanager.us-central1.rep.googleapis.com RenderParameterVersion"] == 1
    fake.parameters[key] = b'{"db": "host-b"}'  # a __REF__ inside it now renders to another secret version
    probe = check_versions(spec, clients)[0]
    assert probe.value is not None and probe.value.data == b"host-b" and probe.version != first.version


def test_once_explains_that_it_reads_aws_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fetcher.__main__ import main

    manifest = tmp_path / "spc.yaml"
    manifest.write_text(PROVIDER_EXAMPLE)
    code = main(
        [
            "once",
            "--secret-provider-class",
            str(manifest),
            "--dir",
            str(tmp_path / "out"),
            "--termination-log",
            str(tmp_path / "log"),
        ],
        {},
    )
    assert code == 2
    assert "is a provider: gcp class; `once` fetches from AWS only" in (tmp_path / "log").read_text()


def test_an_unreachable_endpoint_fails_within_bounds_naming_the_host(token_file: Path) -> None:
    import socket
    import time

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}])
    assert spec.gcp is not None
    clients = GcpClients(spec.gcp, Https(f"https://127.0.0.1:{port}"), str(token_file))
    _opened.append(clients)
    began = time.monotonic()
    with pytest.raises(GcpIdentityError, match="could not reach sts.googleapis.com"):
        fetch_all(spec, clients)
    assert time.monotonic() - began < 15  # four tries with jittered back-off, never a hang


def test_a_kept_alive_connection_the_server_closed_is_replaced_at_once(
    fake: GcpFake, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    fake.add_version(PROJECT, "db", "one")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/latest", "path": "db"}])
    clients = clients_for(fake, spec, token_file)
    fetch_all(spec, clients)
    pooled = [conn for conns in clients.https.http._idle.values() for conn in conns]
    assert pooled
    for conn in pooled:  # what an idle timeout on Google's side does to the pool
        conn.sock.shutdown(socket.SHUT_RDWR)
    backoffs: list[float] = []
    monkeypatch.setattr(clients.https, "sleep", backoffs.append)
    assert check_versions(spec, clients)[0].version == "1"
    assert backoffs == []  # not an attempt: no back-off, and the retry budget is intact
    assert fake.count("GetSecretVersion") == 1


def test_a_refused_access_token_is_exchanged_again_on_the_next_try(fake: GcpFake, token_file: Path) -> None:
    """A token Google stops accepting before its stated expiry (revoked, or a lying expires_in) must not
    fail every refresh until that expiry: the 401 drops it, and the next cycle exchanges the pod's token again."""
    fake.add_version(PROJECT, "db", "one")
    spec = spec_of([{"resourceName": f"projects/{PROJECT}/secrets/db/versions/1", "path": "db"}])
    clients = clients_for(fake, spec, token_file)
    assert fetch_all(spec, clients)[0].data == b"one"
    fake.tokens.clear()  # what a revocation does
    assert "UNAUTHENTICATED (HTTP 401)" in errors_of(spec, clients)
    assert fetch_all(spec, clients)[0].data == b"one"
    assert fake.count("ExchangeToken") == 2
