"""`python -m devcluster up` (`make cluster`): one command to a control plane with the chart's webhook serving.

Why it exists: it is the local try-out path the docs send newcomers to; it
must print a KUBECONFIG that works, inject a pod through the Helm-installed
chart, and stop cleanly on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.ferrylib import REPO_ROOT, wait_for


def test_up_prints_a_kubeconfig_whose_cluster_injects_pods_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KUBERNETES_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "up", "--ready-file", str(ready)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, 300, what="devcluster up to be ready")
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        kubeconfig = ready.read_text()
        kubectl = [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={kubeconfig}"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "check",
                "namespace": "default",
                "annotations": {
                    "ferry.dev/inject": "true",
                    "ferry.dev/objects": "- {objectName: prod/x, objectType: secretsmanager}\n",
                    "ferry.dev/region": "us-east-1",
                },
            },
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }
        created = subprocess.run(
            [*kubectl, "create", "-o", "json", "-f", "-"], input=json.dumps(pod), capture_output=True, text=True
        )
        assert created.returncode == 0, created.stderr
        stored = json.loads(created.stdout)
        assert stored["metadata"]["annotations"]["ferry.dev/status"] == "injected"
        assert stored["spec"]["initContainers"][0]["name"] == "ferry-init"
        release = subprocess.run(
            [str(Path(sys.executable).parent / "helm"), f"--kubeconfig={kubeconfig}", "list", "-A", "-o", "json"],
            capture_output=True,
            text=True,
        )
        assert [r["name"] for r in json.loads(release.stdout)] == ["ferry"], "installed by the chart, with Helm"
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out[-3000:]
    assert "export KUBECONFIG=" in out
    assert not Path(kubeconfig).exists(), "the cluster's files are removed on exit"
