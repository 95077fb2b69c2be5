"""Steps the image builds run in their build stage: trim botocore's data, record the version.

Why it exists: the fetcher image is pulled for every pod on Fargate, where
nodes have no image cache, so each byte in it is paid again and again. About
nine tenths of botocore is its API models, one per AWS service; the fetcher
calls three services. Likewise the kubernetes client ships a second, asyncio
copy of itself (kubernetes.aio, and aiohttp under it) that the webhook never
imports: over a third of the webhook image. In the fetcher, PyYAML's libyaml
extension (2.6 MB, the largest single file) only speeds up `once`, the one
command that reads YAML; PyYAML falls back to its pure-Python SafeLoader,
which parses the same documents. And the images copy Ferry's code rather than pip
installing the project (that would bring boto3 into the webhook image), so
`importlib.metadata.version("ferry-secrets")` needs a small dist-info written from
pyproject.toml, the one place the version is defined.

Standard library only: it runs with the build stage's Python before anything
else is installed. Both steps are pure functions over a directory tree, so the
unit tests run them on a temporary tree.

    python3 images/stage.py prune-botocore SITE_PACKAGES
    python3 images/stage.py prune-kubernetes-aio SITE_PACKAGES
    python3 images/stage.py prune-libyaml SITE_PACKAGES
    python3 images/stage.py write-metadata PYPROJECT SITE_PACKAGES
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

# The services the fetcher creates clients for (fetcher/aws.py) and the STS
# call IRSA's web-identity credentials make.
FETCHER_SERVICES = frozenset({"secretsmanager", "ssm", "sts"})
# Files botocore reads when it builds any client: endpoint resolution, the
# partitions (aws, aws-cn, aws-us-gov, ...), retry modes and the defaults mode.
BOTOCORE_SHARED_FILES = frozenset(
    {"_retry.json", "endpoints.json", "partitions.json", "sdk-default-configuration.json"}
)
# Within a kept service, what only documentation and `boto3.resource` read.
DOC_ONLY_FILES = frozenset({"examples-1.json"})


def prune_botocore(site_packages: Path, services: frozenset[str] = FETCHER_SERVICES) -> int:
    """Delete botocore's and boto3's data for every service not in `services`; return bytes removed.

    A missing shared file is an error (botocore could not build a client
    without it), and so is a missing service (a typo would ship an image that
    fails at its first call).
    """
    data = site_packages / "botocore" / "data"
    if not data.is_dir():
        raise SystemExit(f"prune-botocore: {data} is not a directory; install botocore first")
    present = {entry.name for entry in data.iterdir()}
    missing = sorted((BOTOCORE_SHARED_FILES | services) - present)
    if missing:
        raise SystemExit(f"prune-botocore: botocore data lacks {', '.join(missing)}; check the botocore version")
    removed = 0
    for entry in sorted(data.iterdir()):
        if entry.name in BOTOCORE_SHARED_FILES:
            continue
        if entry.name in services:
            for doc in entry.rglob("*"):
                if doc.name in DOC_ONLY_FILES:
                    removed += doc.stat().st_size
                    doc.unlink()
            continue
        removed += _remove(entry)
    # boto3's resource models (s3, ec2, ...): the fetcher only uses clients.
    resources = site_packages / "boto3" / "data"
    if resources.is_dir():
        removed += _remove(resources)
    # Console scripts pip put beside the packages (jp.py, ...): nothing runs them.
    scripts = site_packages / "bin"
    if scripts.is_dir():
        removed += _remove(scripts)
    return removed


# kubernetes.aio and what only it imports: aiohttp and aiohttp's own dependencies.
KUBERNETES_AIO = ("kubernetes/aio",)
AIO_ONLY_DISTRIBUTIONS = (
    "aiohttp",
    "aiohttp_retry",
    "aiohappyeyeballs",
    "aiosignal",
    "frozenlist",
    "multidict",
    "propcache",
    "yarl",
)


def prune_kubernetes_aio(site_packages: Path) -> int:
    """Delete kubernetes.aio and the distributions only it needs; return bytes removed."""
    if not (site_packages / "kubernetes" / "client").is_dir():
        raise SystemExit(f"prune-kubernetes-aio: no kubernetes client in {site_packages}; install it first")
    removed = 0
    for relative in KUBERNETES_AIO:
        path = site_packages / relative
        if path.exists():
            removed += _remove(path)
    for name in AIO_ONLY_DISTRIBUTIONS:
        for path in [site_packages / name, *site_packages.glob(f"{name}-*.dist-info")]:
            if path.exists():
                removed += _remove(path)
    return removed


def prune_libyaml(site_packages: Path) -> int:
    """Delete PyYAML's compiled libyaml binding (yaml/_yaml*.so); return bytes removed."""
    package = site_packages / "yaml"
    if not (package / "__init__.py").is_file():
        raise SystemExit(f"prune-libyaml: no PyYAML in {site_packages}; install it first")
    return sum(_remove(path) for path in sorted(package.glob("_yaml*.so")))


def _remove(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size
    path.unlink()
    return size


def project_version(pyproject: Path) -> tuple[str, str]:
    """(name, version) from a pyproject.toml's [project] table."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    name, version = project.get("name"), project.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise SystemExit(f"write-metadata: {pyproject} has no [project] name and version")
    return name, version


def write_metadata(pyproject: Path, site_packages: Path) -> Path:
    """Write `<name>-<version>.dist-info/METADATA` so importlib.metadata finds the project."""
    name, version = project_version(pyproject)
    # The directory name escapes "-" as "_" (as wheels do), else importlib.metadata reads the name wrong.
    dist_info = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    metadata = dist_info / "METADATA"
    metadata.write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images/stage.py", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prune = commands.add_parser("prune-botocore", help="keep botocore data for the fetcher's services only")
    prune.add_argument("site_packages", type=Path)
    aio = commands.add_parser("prune-kubernetes-aio", help="drop the kubernetes client's unused asyncio copy")
    aio.add_argument("site_packages", type=Path)
    libyaml = commands.add_parser("prune-libyaml", help="drop PyYAML's C extension (pure-Python loader stays)")
    libyaml.add_argument("site_packages", type=Path)
    meta = commands.add_parser("write-metadata", help="write the project's dist-info from pyproject.toml")
    meta.add_argument("pyproject", type=Path)
    meta.add_argument("site_packages", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prune-botocore":
        removed = prune_botocore(args.site_packages)
        print(f"prune-botocore: removed {removed} bytes")
    elif args.command == "prune-libyaml":
        print(f"prune-libyaml: removed {prune_libyaml(args.site_packages)} bytes")
    elif args.command == "prune-kubernetes-aio":
        print(f"prune-kubernetes-aio: removed {prune_kubernetes_aio(args.site_packages)} bytes")
    else:
        print(f"write-metadata: {write_metadata(args.pyproject, args.site_packages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
