"""Filesystem calls relative to an open directory, never following a symlink.

The volume is shared with the app's containers, so nothing found in it is trusted; writer.py builds the
atomic swap on these primitives. Details: docs/fetcher.md ("How files are swapped").
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Deeper than any set Ferry writes (a file path has at most a few components): a planted tree, not ours.
MAX_DEPTH = 32
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class Unexpected(Exception):
    """The set on disk is not the one compared with (or is not a set Ferry could have written)."""


@contextmanager
def open_root(root: Path, *, create: bool) -> Iterator[int]:
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def opened_dir(parent_fd: int, name: str) -> Iterator[int]:
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def readlink(dir_fd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def is_real_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def exists(dir_fd: int, name: str) -> bool:
    """Whether `name` (one of our relative symlinks) resolves; following it only to stat, never to open."""
    try:
        os.stat(name, dir_fd=dir_fd)
    except OSError:
        return False
    return True


def visible_names(parent_fd: int, name: str) -> set[str]:
    """The entries of directory `name` that are not hidden swap names ("..*"); none if it cannot be opened."""
    try:
        with opened_dir(parent_fd, name) as fd:
            return {entry for entry in os.listdir(fd) if not entry.startswith("..")}
    except OSError:
        return set()


def walk_files(dir_fd: int, prefix: str, depth: int = 0) -> Iterator[tuple[str, int, os.stat_result]]:
    """(relative path, open fd, fstat) of every regular file below `dir_fd`; raises Unexpected on anything else."""
    if depth > MAX_DEPTH:
        raise Unexpected(prefix)
    for name in sorted(os.listdir(dir_fd)):
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:  # ELOOP: a symlink; anything else: not a set Ferry wrote
            raise Unexpected(name) from exc
        try:
            status = os.fstat(fd)
            relative = prefix + name
            if stat.S_ISDIR(status.st_mode):
                yield from walk_files(fd, relative + "/", depth + 1)
            elif stat.S_ISREG(status.st_mode):
                yield relative, fd, status
            else:
                raise Unexpected(relative)
        finally:
            os.close(fd)


def read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`; Unexpected if the file holds fewer or more (it changed under us)."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1024 * 1024))
        if not chunk:
            raise Unexpected("shorter than its size")
        chunks.append(chunk)
        left -= len(chunk)
    if os.read(fd, 1):
        raise Unexpected("longer than its size")
    return b"".join(chunks)


def remove_any(dir_fd: int, name: str) -> None:
    """Remove `name` whatever it is (file, symlink, FIFO, directory tree); missing is fine."""
    if is_real_dir(dir_fd, name):
        remove_tree(dir_fd, name)
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def remove_tree(dir_fd: int, name: str) -> None:
    # shutil.rmtree with dir_fd walks by descriptor and never follows a symlink out of the tree.
    shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)


def describe_os_error(exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += "; the fetcher must run as a user that can write the volume (the pod's fsGroup)"
    elif exc.errno == errno.ENOSPC:
        reason += "; the volume is full (raise the emptyDir sizeLimit)"
    elif exc.errno == errno.ELOOP:
        reason += "; a symlink stands where Ferry expects a directory of its own"
    return reason + where
