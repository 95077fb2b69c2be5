"""Fixtures for the image tests: both images built once per session with buildah.

Why it exists: building takes a minute or two on a clean machine, so the
images are built once and shared. Building needs root, buildah, mmdebstrap
and chroot. Where they are missing the tests are skipped, except in CI
(CI=true), where `.ci/run` installs them and a missing tool is a failure.
With FERRY_IMAGE_ARCHIVE_DIR set (the release workflow), the images are the
release's own OCI archives, loaded instead of built.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.paths import load_script

builder = load_script("scripts/build_images.py", "build_images")


@pytest.fixture(scope="session")
def image_tools() -> ModuleType:
    problems = list(builder.missing_tools())
    if os.geteuid() != 0:
        problems.append("root (mmdebstrap --mode=root, buildah's vfs storage, chroot)")
    if problems:
        message = f"image tests need {', '.join(problems)}: apt-get install buildah mmdebstrap, as root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return builder


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    config: object  # build_images.ImageConfig


@contextmanager
def _built(tools: ModuleType, name: str) -> Iterator[BuiltImage]:
    """Build the image (or load the release's archive of it) under a tag of this session's own; remove it after."""
    tag = tools.local_tag(name, suffix=f"test-{os.getpid()}")
    archive = tools.release_archive(name)
    if archive is not None:
        tools.load_archive(archive, tag)
    else:
        tools.build_image(tools.IMAGES[name], tag)
    try:
        yield BuiltImage(tag, tools.image_config(tag))
    finally:
        tools.remove_image(tag)


@pytest.fixture(scope="session")
def fetcher_image(image_tools: ModuleType) -> Iterator[BuiltImage]:
    with _built(image_tools, "fetcher") as image:
        yield image


@pytest.fixture(scope="session")
def webhook_image(image_tools: ModuleType) -> Iterator[BuiltImage]:
    with _built(image_tools, "webhook") as image:
        yield image


@pytest.fixture
def fetcher_rootfs(image_tools: ModuleType, fetcher_image: BuiltImage) -> Iterator[Path]:
    with image_tools.mounted(fetcher_image.tag) as rootfs:
        yield rootfs


@pytest.fixture
def webhook_rootfs(image_tools: ModuleType, webhook_image: BuiltImage) -> Iterator[Path]:
    with image_tools.mounted(webhook_image.tag) as rootfs:
        yield rootfs
