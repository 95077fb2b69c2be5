"""`make demo` against a real control plane: every kubectl line is kubectl's own.

The demo starts its own control plane from KUBEBUILDER_ASSETS (devcluster), so
this test shares nothing with the suite's session cluster but the binaries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.demo.run import REPO_ROOT, run_demo, workdir_of


def test_the_demo_runs_against_the_real_control_plane(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "FERRY_DEMO_KEEP"}
    result = run_demo(REPO_ROOT, tmp_path / "tmp", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "would print" not in out  # nothing is made up
    assert "| deployment.apps/api created" in out
    assert re.search(r"\| api-[a-z0-9]+-[a-z0-9]+ +ferry-init,ferry-sidecar +api,metrics", out)
    assert "| pod/payments created" in out
    assert re.search(r"\| payments +0/2 +Init:Error +0", out)  # kubectl's own STATUS column
    message = next(line for line in out.splitlines() if "Message:" in line)
    for needle in ("prod/payments/stripe-key", "ResourceNotFoundException", "us-east-1"):
        assert needle in message
    assert 'Error from server (Forbidden): error when creating "bad-pod.yaml"' in out
    assert re.search(r"\| Warning +FailedCreate +ReplicaSet +Error creating: admission webhook \"pods.ferry.dev\"", out)
    workdir = workdir_of(out)
    assert not workdir.exists() and not any((tmp_path / "tmp").iterdir())
