"""The status entry names the version behind each object's files: Google's number for `latest`, AWS's ids.

Both against real servers over HTTP (the loopback Google fake over TLS, moto), through the real sidecar loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fetcher.aws import AwsClients
from fetcher.contract import spec_from_secret_provider_class
from fetcher.gcp import GcpClients, Https, http_settings
from fetcher.loop import RefreshState, run_sidecar
from fetcher.status import (
    MAX_STATUS_BYTES,
    STATUS_NAME,
    ObjectVersion,
    check,
    read_status,
    record_failure,
    record_success,
    write_status,
)
from tests.support.aws import PRIMARY, Seeder, make_spec
from tests.support.gcpfake import POOL, PROVIDER, GcpFake, ksa_token

PROJECT = "ferry-test"
GLOBAL = f"projects/{PROJECT}/secrets/db/versions/latest"
REGIONAL = f"projects/{PROJECT}/locations/us-central1/secrets/api/versions/latest"
PINNED = f"projects/{PROJECT}/secrets/cert/versions/1"
PARAMETER = f"projects/{PROJECT}/locations/us-central1/parameters/app-config/versions/v1"


@pytest.fixture
def fake() -> Iterator[GcpFake]:
    with GcpFake() as served:
        served.grant("apps/web", f"projects/{PROJECT}/")
        yield served


def gcp_state(fake: GcpFake, tmp_path: Path, secrets: list[dict[str, Any]]) -> RefreshState:
    token = tmp_path / "token"
    token.write_text(ksa_token("apps", "web"))
    manifest = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app"},
        "spec": {"provider": "gcp", "parameters": {"secrets": yaml.safe_dump(secrets)}},
    }
    spec = spec_from_secret_provider_class(manifest, gcp_identity={"workloadPool": POOL, "identityProvider": PROVIDER})
    spec = dataclasses.replace(spec, refresh_seconds=0.01)
    assert spec.gcp is not None
    https = Https(fake.url, http_settings({"SSL_CERT_FILE": str(fake.ca_file)}))
    clients = GcpClients(spec.gcp, https, str(token))
    target = tmp_path / "secrets"
    target.mkdir()  # the pod's emptyDir exists before any container starts
    return RefreshState(spec=spec, clients=clients, target_dir=target)


class Sidecar:
    """run_sidecar in a thread, stopped at the end of the test."""

    def __init__(self, state: RefreshState) -> None:
        self.state = state
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run_sidecar, args=(state, self.stop), kwargs={"max_backoff": 0.02})

    def __enter__(self) -> Sidecar:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        if isinstance(self.state.clients, GcpClients):
            self.state.clients.close()

    def wait_for(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done()


def versions(target: Path) -> dict[str, tuple[str, str]]:
    status = read_status(target)
    return {} if status is None else {o.name: (o.version, o.region) for o in status.objects}


def test_gcp_latest_is_reported_by_number_and_follows_a_rotation(fake: GcpFake, tmp_path: Path) -> None:
    fake.add_version(PROJECT, "db", "db-value-one-qzka")
    fake.add_version(PROJECT, "db", "db-value-two-qzkb")
    fake.add_version(PROJECT, "api", "api-value-qzkd", location="us-central1")
    fake.add_version(PROJECT, "cert", "cert-value-qzke")
    state = gcp_state(
        fake,
        tmp_path,
        [{"resourceName": name, "path": path} for name, path in ((GLOBAL, "db"), (REGIONAL, "api"), (PINNED, "c"))],
    )
    target = state.target_dir
    with Sidecar(state) as sidecar:
        sidecar.wait_for(lambda: bool(versions(target)))
        assert versions(target) == {GLOBAL: ("2", "global"), REGIONAL: ("1", "us-central1"), PINNED: ("1", "global")}
        assert json.loads((target / STATUS_NAME).read_text())["objects"][0] == {
            "name": GLOBAL,
            "version": "2",
            "region": "global",
        }
        fake.add_version(PROJECT, "db", "db-value-three-qzkc")  # latest rotates
        sidecar.wait_for(lambda: versions(target).get(GLOBAL) == ("3", "global"))
        assert (target / "db").read_text() == "db-value-three-qzkc"
        assert versions(target)[REGIONAL] == ("1", "us-central1")
        entry = (target / STATUS_NAME).read_text()
    # Markers of letters outside hex: no version number, checksum or time can contain them by chance.
    for value in ("qzka", "qzkb", "qzkc", "qzkd", "qzke"):
        assert value not in entry


def test_an_unchanged_gcp_refresh_writes_no_files_and_keeps_the_versions(fake: GcpFake, tmp_path: Path) -> None:
    fake.add_version(PROJECT, "db", "one")
    state = gcp_state(fake, tmp_path, [{"resourceName": GLOBAL, "path": "db"}])
    target = state.target_dir
    with Sidecar(state) as sidecar:
        sidecar.wait_for(lambda: bool(versions(target)))
        generation = os.readlink(target / "..data")
        first = json.loads((target / STATUS_NAME).read_text())
        checks = fake.count("GetSecretVersion")
        sidecar.wait_for(lambda: fake.count("GetSecretVersion") >= checks + 3)  # three unchanged refreshes
        last = json.loads((target / STATUS_NAME).read_text())
    assert os.readlink(target / "..data") == generation  # no new generation of files
    assert sorted(os.listdir(target)) == sorted([STATUS_NAME, "..data", generation, "db"])
    assert fake.count("AccessSecretVersion") == 1
    # The status entry is rewritten each cycle (its time is what the liveness probe judges); only the times move.
    assert last["updated"] > first["updated"]
    moved = {key for key in first if first[key] != last[key]}
    assert moved <= {"updated", "last_success"} and last["objects"] == [
        {"name": GLOBAL, "version": "1", "region": "global"}
    ]


def test_a_parameter_version_is_reported_without_the_checksum_of_its_value(fake: GcpFake, tmp_path: Path) -> None:
    fake.parameters[(PROJECT, "us-central1", "app-config", "v1")] = b'{"db": "host-qzxw"}'
    state = gcp_state(fake, tmp_path, [{"resourceName": PARAMETER, "path": "cfg"}])
    with Sidecar(state) as sidecar:
        sidecar.wait_for(lambda: bool(versions(state.target_dir)))
    assert state.values[0].version.count("#") == 1  # the refresh compares by the rendered bytes' checksum
    (version, region) = versions(state.target_dir)[PARAMETER]
    assert "#" not in version and region == "us-central1"
    assert version == state.values[0].version.partition("#")[0]
    entry = (state.target_dir / STATUS_NAME).read_text()
    assert "qzxw" not in entry and state.values[0].version.partition("#")[2] not in entry


def test_aws_objects_report_the_version_id_and_the_parameter_version(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    version_id = seed.secret("db", "aws-value-qvzk")
    seed.parameter("/app/flag", "first-wxjq")
    number = seed.parameter("/app/flag", "second-wxjr")
    spec = make_spec(
        [
            {"objectName": "db", "objectType": "secretsmanager"},
            {"objectName": "/app/flag", "objectType": "ssmparameter"},
        ],
        refresh_interval=0.01,
    )
    target.mkdir()
    with Sidecar(RefreshState(spec, clients, target)) as sidecar:
        sidecar.wait_for(lambda: bool(versions(target)))
    assert versions(target) == {"db": (version_id, PRIMARY), "/app/flag": (str(number), PRIMARY)}
    entry = (target / STATUS_NAME).read_text()
    # Markers of letters outside hex, so no version id, UUID or time can contain them by chance.
    assert "qvzk" not in entry and "wxj" not in entry


def test_a_failure_keeps_the_versions_of_the_files_still_on_disk() -> None:
    from fetcher.status import record_failure

    held = (ObjectVersion("db", "7", "global"),)
    failed = record_failure(record_success(None, 10.0, held), 20.0, "db: UNAVAILABLE")
    assert failed.objects == held and not failed.ok


def test_the_entry_bounds_each_field_and_reads_back(tmp_path: Path) -> None:
    long = ObjectVersion("n" * 5000, "v" * 500, "r" * 500)
    write_status(tmp_path, record_success(None, 1.0, (long,) * 200))
    read = read_status(tmp_path)
    assert read is not None and len(read.objects) == 200
    assert len(read.objects[0].name) <= 512 and len(read.objects[0].version) <= 80
    for junk in ('[{"name": 1}]', "[1]", '"x"', '[{"name": "a", "version": "1"}]'):
        raw = json.loads((tmp_path / STATUS_NAME).read_text())
        (tmp_path / STATUS_NAME).write_text(json.dumps({**raw, "objects": json.loads(junk)}))
        assert read_status(tmp_path) is None


def test_hostile_version_text_keeps_the_entry_within_its_bound_and_the_probe_working(tmp_path: Path) -> None:
    # A Parameter Manager reply's parameterVersion is untrusted text: astral characters and control characters
    # are 12 and 6 bytes each once escaped in JSON. 200 such objects must neither push the entry past
    # MAX_STATUS_BYTES (the probe would read no entry and call a failing sidecar healthy) nor reach the file raw.
    hostile = "\U0001d7d7\n\x00\u202e" * 40
    objects = tuple(ObjectVersion("\U0001f600" * 600, hostile, hostile) for _ in range(200))
    failing = record_failure(record_success(None, 1.0, objects), 2.0, "AccessDenied")
    write_status(tmp_path, failing)
    raw = (tmp_path / STATUS_NAME).read_bytes()
    assert len(raw) <= MAX_STATUS_BYTES
    read = read_status(tmp_path)
    assert read is not None and read.objects, "the entry must still be read"
    assert all(o.version.isascii() and o.version.isprintable() for o in read.objects)
    assert all(o.region.isascii() and o.region.isprintable() for o in read.objects)
    healthy, line = check(tmp_path, unhealthy_after=60.0, now=1000.0)
    assert not healthy and line.startswith("unhealthy"), line
