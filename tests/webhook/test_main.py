"""`python -m webhook inject`: offline injection of workload manifests, as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.pods import make_pod
from webhook.policy.workloads import InjectionDenied, inject_manifest
from webhook.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-apiserver-v1.28"
REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = kubernetes_validate.latest_version()

TEMPLATE: dict[str, Any] = {
    "metadata": {
        "labels": {"app": "api"},
        "annotations": {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db-credentials"},
    },
    "spec": {
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
        "containers": [{"name": "api", "image": "registry.example.com/api:1.4.2"}],
    },
}


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "team-a"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "api"}},
            "template": json.loads(json.dumps(TEMPLATE)),
        },
    }


def job_template(refresh: str = "1m") -> dict[str, Any]:
    template = json.loads(json.dumps(TEMPLATE))
    template["metadata"]["annotations"]["ferry.dev/refresh-interval"] = refresh
    template["spec"]["restartPolicy"] = "Never"
    return template


def job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "report"},
        "spec": {"template": job_template()},
    }


def cronjob() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "team-a"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template()}}},
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "api", "namespace": "team-a"},
    "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]},
}


def run_inject(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "inject", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def pod_templates(document: dict[str, Any]) -> dict[str, Any]:
    if document["kind"] == "CronJob":
        template: dict[str, Any] = document["spec"]["jobTemplate"]["spec"]["template"]
        return template
    template = document["spec"]["template"]
    return template


def test_multi_document_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump_all([deployment(), SERVICE, job(), cronjob()]))
    result = run_inject(
        "-f",
        str(manifest),
        "--secret-provider-class",
        str(FIXTURES / "secretproviderclasses.yaml"),
        "--namespace",
        "team-a",
        "--native-sidecars",
        "false",
    )
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "Job", "CronJob"]
    assert "&id" not in result.stdout and "*id" not in result.stdout  # no YAML anchors in manifests
    assert documents[1] == SERVICE
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    deploy = pod_templates(documents[0])
    # A preview, not the stored pod: no status (a committed preview must not freeze the workload) and the
    # app's own token choice kept; stdout says so, stderr explains both.
    assert result.stdout.startswith("# Preview by ferry-webhook inject")
    assert "ferry.dev/status" not in deploy["metadata"]["annotations"]
    assert "automountServiceAccountToken" not in deploy["spec"]
    assert "apply the original manifest" in result.stderr and "automountServiceAccountToken: false" in result.stderr
    assert "namespace" not in deploy["metadata"] and "ownerReferences" not in deploy["metadata"]
    assert [c["name"] for c in deploy["spec"]["initContainers"]] == ["ferry-init"]
    for document in documents[2:]:
        template = pod_templates(document)
        # Jobs must complete: no regular sidecar without native sidecars, and the user is told.
        assert [c["name"] for c in template["spec"]["containers"]] == ["api"]
        assert [c["name"] for c in template["spec"]["initContainers"]] == ["ferry-init"]
        assert "ownerReferences" not in template["metadata"]
    assert result.stderr.count("no refresh sidecar in this run-to-completion pod") == 2


def test_native_sidecars_by_default_and_stdin(tmp_path: Path) -> None:
    result = run_inject(
        "-f",
        "-",
        "--secret-provider-class",
        str(FIXTURES / "secretproviderclasses.yaml"),
        "--namespace",
        "team-a",
        stdin=yaml.safe_dump(job()),
    )
    assert result.returncode == 0, result.stderr
    (document,) = yaml.safe_load_all(result.stdout)
    init = document["spec"]["template"]["spec"]["initContainers"]
    assert [(c["name"], c.get("restartPolicy")) for c in init] == [("ferry-init", None), ("ferry-sidecar", "Always")]


def test_namespace_annotations_file(tmp_path: Path) -> None:
    annotations = tmp_path / "ns.yaml"
    annotations.write_text(yaml.safe_dump({"team-c": {"ferry.dev/region": "us-west-2"}}))
    pod = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/objects": "- objectName: a\n  objectType: secretsmanager\n"},
        [{"name": "c", "image": "i"}],
        name="p",
        namespace="team-c",
    )
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    result = run_inject("-f", str(manifest), "--namespace-annotations", str(annotations))
    assert result.returncode == 0, result.stderr
    (document,) = yaml.safe_load_all(result.stdout)
    wire = json.loads(document["spec"]["initContainers"][0]["env"][0]["value"])
    assert wire["region"] == "us-west-2"


def test_invalid_input_exits_non_zero_with_the_servers_message(tmp_path: Path) -> None:
    bad = deployment()
    bad["spec"]["template"]["metadata"]["annotations"]["ferry.dev/secret-provider-class"] = "nope"
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump_all([SERVICE, bad]))
    result = run_inject("-f", str(manifest), "--secret-provider-class", str(FIXTURES / "secretproviderclasses.yaml"))
    assert result.returncode == 1
    assert result.stdout == ""
    server_message = _server_message(bad)
    assert server_message in result.stderr
    assert result.stderr.startswith("error: Deployment team-a/api: ferry.dev/secret-provider-class:")


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    assert run_inject("-f", str(tmp_path / "missing.yaml")).returncode == 2
    (tmp_path / "broken.yaml").write_text("a: [")
    assert run_inject("-f", str(tmp_path / "broken.yaml")).returncode == 2
    assert run_inject("-f", "-", stdin="{}", env={"FERRY_DEFAULT_REGION": "nowhere"}).returncode == 2


def _server_message(document: dict[str, Any]) -> str:
    """What POST /mutate says for this template's pod (same code path, asserted here)."""
    from webhook.policy.view import StaticView

    view = StaticView.from_files([FIXTURES / "secretproviderclasses.yaml"])
    with pytest.raises(InjectionDenied) as denied:
        inject_manifest(
            document,
            namespace="default",
            view=view,
            settings=Settings(),
            native_sidecars=True,
        )
    return denied.value.message


def test_in_process_pass_through_and_list() -> None:
    from webhook.policy.view import StaticView

    view = StaticView.from_files([FIXTURES / "secretproviderclasses.yaml"])
    kwargs: dict[str, Any] = {
        "namespace": "team-a",
        "view": view,
        "settings": Settings(),
        "native_sidecars": True,
    }
    assert inject_manifest(SERVICE, **kwargs).decision is None
    assert inject_manifest("just a string", **kwargs).decision is None
    result = inject_manifest(deployment(), **kwargs)
    assert result.decision is not None and result.decision.outcome == "injected"
    # Injecting an already injected manifest changes nothing.
    again = inject_manifest(result.document, **kwargs)
    assert again.document == result.document and again.decision is not None
    assert again.decision.outcome == "reinvoked"


@pytest.mark.parametrize(("labels", "injected"), [({}, False), ({"ferry.dev/inject": "enabled"}, True)])
def test_namespace_opt_in_counts_only_with_the_label_as_in_a_cluster(
    tmp_path: Path, labels: dict[str, str], injected: bool
) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-d", "labels": labels, "annotations": {"ferry.dev/inject": "true"}},
    }
    (tmp_path / "ns.yaml").write_text(yaml.safe_dump(namespace))
    pod = make_pod(
        {"ferry.dev/region": "us-east-1", "ferry.dev/objects": "- objectName: a\n  objectType: secretsmanager\n"},
        [{"name": "c", "image": "i"}],
        name="p",
        namespace="team-d",
    )
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    result = run_inject("-f", str(tmp_path / "pod.yaml"), "--namespace-annotations", str(tmp_path / "ns.yaml"))
    assert result.returncode == 0, result.stderr
    (document,) = yaml.safe_load_all(result.stdout)
    assert ("initContainers" in document["spec"]) is injected
    assert ("ferry.dev/inject=enabled" in result.stderr) is not injected  # the warning names the missing label


def test_inject_refuses_yaml_aliases_before_expanding_them(tmp_path: Path) -> None:
    # Each level refers to the one above nine times: small here, gigabytes a few levels further on.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    result = run_inject("-f", str(bomb))
    assert result.returncode == 2, result
    assert "anchor or alias" in result.stderr and result.stdout == ""


def test_inject_namespaces_file_gets_the_same_guards(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: i}]}\n")
    namespaces = tmp_path / "namespaces.yaml"
    namespaces.write_text("a: &a {x: y}\nb: *a\n")
    result = run_inject("-f", str(pod), "--namespace-annotations", str(namespaces))
    assert result.returncode == 2, result
    assert "anchor or alias" in result.stderr


def test_offline_inject_never_loads_the_kubernetes_client(tmp_path: Path) -> None:
    """`inject` works on files: importing the Kubernetes client (seconds, and a cluster config) is not its business."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        yaml.safe_dump(
            make_pod(  # named app, with one container app of APP_IMAGE (registry.example.com/app:1)
                {
                    "ferry.dev/inject": "true",
                    "ferry.dev/region": "eu-west-1",
                    "ferry.dev/objects": '- objectName: "prod/db"\n  objectType: secretsmanager\n',
                }
            )
        )
    )
    script = (
        "import sys\n"
        "from webhook.__main__ import main\n"
        f"code = main(['inject', '-f', {str(manifest)!r}])\n"
        "loaded = sorted(name for name in sys.modules if name == 'kubernetes' or name.startswith('kubernetes.'))\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "sys.exit(code or (1 if loaded else 0))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ferry-init" in result.stdout, "not vacuous: the pod was injected"
    assert "LOADED []" in result.stderr
