"""Build Ferry's two images from their Dockerfiles without a Docker engine, and measure them.

Why it exists: the images are what users run, so they are built and run here
too, not only linted. No registry can be reached and no container runtime can
run on these machines, so:

- the two bases the Dockerfiles take as build arguments are made from Debian
  packages with `mmdebstrap`: a build base (Debian's Python 3.11 and pip) and a
  runtime base shaped like the distroless Python image (the interpreter and
  its libraries; no shell, no apt, no dpkg, no pip);
- `buildah bud --isolation chroot --storage-driver vfs` builds each Dockerfile
  on them, unchanged;
- `buildah mount` exposes an image's root filesystem, and `run_in_image`
  starts the image's own ENTRYPOINT in it with `chroot`, as the image's USER.

The mmdebstrap tarballs and buildah's storage live in a cache directory
(FERRY_IMAGES_CACHE, default ~/.cache/ferry-images) so repeated runs are quick;
a clean run builds everything.

    python scripts/build_images.py            # build both, print sizes as JSON
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"  # the Debian release of the published bases (python:3.11-slim-bookworm, distroless debian12)
TOOLS = ("buildah", "mmdebstrap", "chroot")
IMAGE_UID = 65532

# What the runtime base holds: the interpreter and its standard library, as in
# distroless. dpkg and tar come in as dependencies of the extracted packages;
# they are deleted with everything else a distroless image leaves out.
RUNTIME_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib")
RUNTIME_REMOVE = (
    "bin/tar",
    "usr/bin/dpkg*",
    "usr/bin/update-alternatives",
    "usr/sbin/dpkg*",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/lib/dpkg",
    "etc/dpkg",
)
BUILD_PACKAGES = ("python3", "python3-pip")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Base:
    """One mmdebstrap root filesystem, finished in Python, imported into buildah as `localhost/<name>:<key>`."""

    name: str
    variant: str
    packages: tuple[str, ...]
    finish: Callable[[Path], None]
    settings: tuple[str, ...] = ()  # anything else the result depends on (part of the cache key)

    @property
    def key(self) -> str:
        source = Path(__file__).read_bytes()  # a change to how bases are made makes new ones
        text = json.dumps([SUITE, self.variant, self.packages, self.settings, hashlib.sha256(source).hexdigest()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def image(self) -> str:
        return f"localhost/{self.name}:{self.key}"

    @property
    def tarball_key(self) -> str:
        """What the mmdebstrap tarball depends on (not how it is finished)."""
        return hashlib.sha256(json.dumps([SUITE, self.variant, self.packages]).encode()).hexdigest()[:16]


def _finish_runtime(rootfs: Path) -> None:
    """Make the extracted packages look like the distroless Python base: interpreter, libraries, users."""
    for pattern in RUNTIME_REMOVE:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    python3 = rootfs / "usr" / "bin" / "python3"
    python3.unlink(missing_ok=True)
    python3.symlink_to("python3.11")
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    tmp = rootfs / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    home = rootfs / "home" / "nonroot"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, IMAGE_UID, IMAGE_UID)


def _pip_ca_bundle() -> str:
    """The CA bundle pip here is told to trust (PIP_CERT or pip's config), if any: a TLS-inspecting proxy, say."""
    cert = os.environ.get("PIP_CERT") or _pip_config("global.cert")
    return cert if cert and Path(cert).is_file() else ""


def _finish_build(rootfs: Path) -> None:
    """Let pip in the build stage trust what pip here trusts; nothing else is added."""
    cert = _pip_ca_bundle()
    if cert:
        shutil.copyfile(cert, rootfs / "etc" / "ferry-build-ca.pem")
        (rootfs / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ferry-build-ca.pem\n")


def _pip_config(name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", name], capture_output=True, text=True, check=False, timeout=60
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def bases() -> tuple[Base, Base]:
    """(build base, runtime base)."""
    return (
        Base("ferry-build-base", "minbase", BUILD_PACKAGES, _finish_build, (_pip_ca_bundle(),)),
        Base("ferry-runtime-base", "extract", RUNTIME_PACKAGES, _finish_runtime),
    )


def cache_dir() -> Path:
    root = os.environ.get("FERRY_IMAGES_CACHE") or str(Path.home() / ".cache" / "ferry-images")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class ImageBuildError(RuntimeError):
    pass


def _run(command: Sequence[str], *, timeout: float = 1800, **kwargs: object) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ImageBuildError(f"{shlex.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return str(result.stdout)


def buildah(*args: str, timeout: float = 1800) -> str:
    storage = cache_dir() / "storage"
    return _run(
        [
            "buildah",
            "--root",
            str(storage / "root"),
            "--runroot",
            str(storage / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ],
        timeout=timeout,
    )


def image_exists(image: str) -> bool:
    try:
        buildah("inspect", "--type", "image", image, timeout=120)
    except ImageBuildError:
        return False
    return True


def ensure_base(base: Base) -> str:
    """Make (or reuse) the base's tarball with mmdebstrap and import it into buildah; return its image name."""
    if image_exists(base.image):
        return base.image
    tarball = cache_dir() / f"{base.name}-{base.tarball_key}.tar"
    if not tarball.is_file():
        partial = tarball.with_suffix(f".{os.getpid()}.partial.tar")  # parallel runs each write their own
        command = [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            f"--variant={base.variant}",
            f"--include={','.join(base.packages)}",
            SUITE,
            str(partial),
        ]
        _run(command)
        partial.rename(tarball)
    _remove_older(base)
    container = buildah("from", "scratch").strip()
    try:
        mount = Path(buildah("mount", container).strip())
        with tarfile.open(tarball) as archive:
            archive.extractall(mount, filter="fully_trusted")
        base.finish(mount)
        buildah("config", "--env", PATH_ENV, container)
        buildah("commit", "--quiet", container, base.image)
    finally:
        buildah("rm", container)
    return base.image


def _remove_older(base: Base) -> None:
    """Delete images and tarballs of this base made by an earlier version of this file (else the cache grows)."""
    reference = f"reference=localhost/{base.name}"
    listing = buildah("images", "--format", "{{.Name}}:{{.Tag}}", "--filter", reference).split()
    for image in listing:
        if image != base.image:
            try:
                buildah("rmi", image)
            except ImageBuildError:
                pass  # still used by an image built on it, or being removed by a parallel run
    for tarball in cache_dir().glob(f"{base.name}-*.tar"):
        if tarball.name != f"{base.name}-{base.tarball_key}.tar" and ".partial." not in tarball.name:
            tarball.unlink(missing_ok=True)


def build_image(dockerfile: str, tag: str) -> float:
    """Build `dockerfile` from the repository on the local bases; return the seconds it took."""
    build_base, runtime_base = (ensure_base(base) for base in bases())
    started = time.monotonic()
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--quiet",
        "--build-arg",
        f"BUILD_BASE={build_base}",
        "--build-arg",
        f"RUNTIME_BASE={runtime_base}",
        "-f",
        str(REPO_ROOT / dockerfile),
        "-t",
        tag,
        str(REPO_ROOT),
    )
    return time.monotonic() - started


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str]
    user: str
    env: dict[str, str]
    workdir: str


def image_config(image: str) -> ImageConfig:
    config = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return ImageConfig(
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        user=str(config.get("User") or ""),
        env=env,
        workdir=str(config.get("WorkingDir") or "/"),
    )


def image_size(image: str) -> str:
    """The image's size as `buildah images` prints it (uncompressed layers, e.g. "72.6 MB")."""
    return buildah("images", "--format", "{{.Size}}", image).strip()


def pull_bytes(image: str, scratch: Path) -> dict[str, int]:
    """What a node downloads: the gzip-compressed layers and config as a registry would serve them.

    The image is pushed to an OCI layout in `scratch` (buildah compresses as it
    pushes), and the manifest's sizes are summed: "layers" for every layer,
    "top_layer" for the layers the image adds on top of its runtime base.
    """
    layout = scratch / "oci"
    if layout.exists():
        shutil.rmtree(layout)
    buildah("push", "--quiet", image, f"oci:{layout}")
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    layers = [int(layer["size"]) for layer in manifest["layers"]]
    shutil.rmtree(layout)
    return {"layers": sum(layers), "top_layer": layers[-1], "config": int(manifest["config"]["size"])}


@contextmanager
def mounted(image: str) -> Iterator[Path]:
    """A working container of `image`, mounted; yields its root filesystem and removes it after."""
    container = buildah("from", "--pull=never", image).strip()
    try:
        yield Path(buildah("mount", container).strip())
    finally:
        buildah("rm", container)


def du(path: Path) -> int:
    """Bytes under `path` (files and symlinks, each inode once), as `du -sb` counts apparent sizes."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total + os.lstat(path).st_size


def run_in_image(
    rootfs: Path,
    config: ImageConfig,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    background: bool = False,
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    """Run the image's ENTRYPOINT with `args` inside `rootfs`, as the image's USER, with its Env.

    `chroot --userspec` changes root, then drops to the user and group the
    image names, with no supplementary groups (what `setpriv --reuid --regid
    --clear-groups` does; setpriv itself is not in a distroless root).
    """
    uid, _, gid = config.user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise ImageBuildError(f"image USER {config.user!r} is not numeric")
    gid = gid or uid
    command = [
        "chroot",
        f"--userspec={uid}:{gid}",
        f"--groups={gid}",
        str(rootfs),
        *config.entrypoint,
        *args,
    ]
    process_env = {**config.env, **(env or {})}
    if background:
        return subprocess.Popen(
            command, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=rootfs
        )
    return subprocess.run(command, env=process_env, capture_output=True, text=True, timeout=timeout, check=False)


IMAGES = {"fetcher": "Dockerfile.fetcher", "webhook": "Dockerfile.webhook"}


def local_tag(name: str, suffix: str = "local") -> str:
    """The tag a local build gets; tests pass a suffix of their own so parallel runs never share a tag."""
    return f"localhost/ferry-{name}:{suffix}"


def remove_image(image: str) -> None:
    buildah("rmi", image)


# The release workflow builds each image once, with the Dockerfile's pinned bases, into an OCI
# archive; it runs tests/images on that archive (this machine's platform) and then pushes that
# same archive. So what is tested is what is released, byte for byte.
ARCHIVE_DIR_ENV = "FERRY_IMAGE_ARCHIVE_DIR"


def release_archive(name: str) -> Path | None:
    """The OCI archive to test instead of building `name` (`<dir>/ferry-<name>.tar`), if one is given."""
    directory = os.environ.get(ARCHIVE_DIR_ENV)
    if not directory:
        return None
    archive = Path(directory) / f"ferry-{name}.tar"
    if not archive.is_file():
        raise ImageBuildError(f"{ARCHIVE_DIR_ENV}={directory} has no {archive.name}: build it first, or unset it")
    return archive


def load_archive(archive: Path, tag: str) -> str:
    """Load an OCI archive (a multi-platform index: this machine's platform) as `tag`; return its image id."""
    image_id = buildah("pull", "--quiet", f"oci-archive:{archive}").strip().splitlines()[-1]
    buildah("tag", image_id, tag)
    return image_id


def main() -> int:
    missing = missing_tools()
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install buildah mmdebstrap)", file=sys.stderr)
        return 2
    report: dict[str, object] = {}
    buildah("rmi", "--prune")  # untagged images left by earlier runs (the tests remove their own)
    started = time.monotonic()
    for base in bases():
        ensure_base(base)
    report["bases_seconds"] = round(time.monotonic() - started, 1)
    for name, dockerfile in IMAGES.items():
        if image_exists(local_tag(name)):
            remove_image(local_tag(name))  # not left behind untagged when the new build takes the tag
        seconds = build_image(dockerfile, local_tag(name))
        with mounted(local_tag(name)) as rootfs:
            app = du(rootfs / "opt" / "ferry")
            total = du(rootfs)
        report[name] = {
            "build_seconds": round(seconds, 1),
            "buildah_images_size": image_size(local_tag(name)),
            "pull_bytes": pull_bytes(local_tag(name), cache_dir()),
            "rootfs_bytes": total,
            "ferry_bytes": app,
        }
    with mounted(ensure_base(bases()[1])) as rootfs:
        report["runtime_base_rootfs_bytes"] = du(rootfs)
    report["runtime_base_pull_bytes"] = pull_bytes(bases()[1].image, cache_dir())
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
