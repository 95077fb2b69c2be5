"""Atomic file sets in the shared volume, the way the kubelet's AtomicWriter does it.

Why it exists: an app reads its secrets while the sidecar rotates them. A
reader must never see a half-written file or a mix of old and new files. So a
new set is written in full into a fresh hidden directory, then made current by
renaming one symlink over another (rename is atomic)::

    <dir>/..2026_11_23_08_17_00.123456_k3j9x/   the files (subdirectories when pathTranslation is off)
    <dir>/..data -> ..2026_11_23_08_17_00.123456_k3j9x
    <dir>/db-password -> ..data/db-password     one relative symlink per top-level entry

A reader that opens ``<dir>/name`` always gets a complete file of one
generation; a reader that wants several files of one generation resolves
``..data`` once and reads them below it.

Unchanged content (same names, bytes and modes) causes no swap at all. Old
generations, a dangling ``..data_tmp`` and stale symlinks (left by a crash or
by a set that shrank) are removed. Unlike the kubelet, the generation just
replaced is kept until the next swap starts: a reader that resolved ``..data``
a moment before the swap can still open its files, instead of racing the
deletion (one extra copy of a few small files on the volume). Ownership: group via ``os.chown(path, -1,
gid)`` (allowed for a group we are in, e.g. the pod's fsGroup); the owner only
when it differs from our own uid, which needs CAP_CHOWN and fails with a
clear WriteError otherwise. Only paths under the target directory are touched.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from fetcher.errors import WriteError
from fetcher.logs import log

DATA_LINK = "..data"
DATA_LINK_TMP = "..data_tmp"
DIR_MODE = 0o755


def swap_directory(
    target: str | os.PathLike[str],
    files: Mapping[str, tuple[bytes, int]],
    uid: int | None = None,
    gid: int | None = None,
) -> bool:
    """Make `files` the current set in `target`; return False (and touch nothing) when it already is."""
    root = Path(target)
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_leftovers(root)
        if read_current(root) == dict(files):
            _link_entries(root, _top_level_names(files))
            return False
        previous = _current_generation(root)
        generation = _write_generation(root, files, uid, gid)
        tmp_link = root / DATA_LINK_TMP
        os.symlink(generation.name, tmp_link)
        os.replace(tmp_link, root / DATA_LINK)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(f"could not write the files into {root}: {_describe_os_error(exc)}") from exc
    names = _top_level_names(files)
    _link_entries(root, names)
    remove_leftovers(root, keep_links=names, keep_generation=previous)
    log.info("swapped files", dir=str(root), generation=generation.name, files=len(files))
    return True


def read_current(target: str | os.PathLike[str]) -> dict[str, tuple[bytes, int]] | None:
    """The set `..data` points at now (relative path -> (bytes, mode)), or None if there is none."""
    root = Path(target)
    try:
        generation = root / os.readlink(root / DATA_LINK)
    except OSError:
        return None
    current: dict[str, tuple[bytes, int]] = {}
    try:
        for directory, _, names in os.walk(generation):
            for name in names:
                path = Path(directory, name)
                with open(path, "rb") as handle:
                    mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                    current[path.relative_to(generation).as_posix()] = (handle.read(), mode)
    except OSError:
        return None
    return current


def remove_leftovers(
    target: str | os.PathLike[str], keep_links: set[str] | None = None, keep_generation: str | None = None
) -> None:
    """Remove what a crash or an older set left: ..data_tmp, old generations, stale ..data symlinks.

    `keep_links`: the top-level names of the current set; other symlinks into ``..data`` go.
    With None, only symlinks whose target no longer exists are removed.
    `keep_generation`: one retired generation to keep (the one a swap just replaced).
    """
    root = Path(target)
    keep = {DATA_LINK, _current_generation(root), keep_generation}
    for entry in os.scandir(root):
        try:
            if entry.name.startswith(DATA_LINK_TMP):
                os.unlink(entry.path)
            elif entry.name.startswith("..") and entry.name not in keep and _is_real_dir(entry):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.is_symlink() and os.readlink(entry.path).startswith(DATA_LINK + "/"):
                stale = not os.path.exists(entry.path) if keep_links is None else entry.name not in keep_links
                if stale:
                    os.unlink(entry.path)
        except FileNotFoundError:
            continue


def _current_generation(root: Path) -> str | None:
    try:
        return os.readlink(root / DATA_LINK)
    except OSError:
        return None


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    return entry.is_dir(follow_symlinks=False)


def _write_generation(root: Path, files: Mapping[str, tuple[bytes, int]], uid: int | None, gid: int | None) -> Path:
    now_us = time.time_ns() // 1000
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now_us // 1_000_000)) + f".{now_us % 1_000_000:06d}_"
    generation = Path(tempfile.mkdtemp(prefix=f"..{stamp}", dir=root))
    try:
        os.chmod(generation, DIR_MODE)
        _set_owner(generation, uid, gid)
        for relative, (content, mode) in sorted(files.items()):
            path = generation / relative
            if not path.parent.exists():
                _make_dirs(generation, path.parent, uid, gid)
            _write_file(path, content, mode, uid, gid)
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    return generation


def _make_dirs(generation: Path, directory: Path, uid: int | None, gid: int | None) -> None:
    missing: list[Path] = []
    while not directory.exists() and directory != generation:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)
        _set_owner(path, uid, gid)


def _write_file(path: Path, content: bytes, mode: int, uid: int | None, gid: int | None) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(content)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        _set_owner(descriptor, uid, gid)
        os.fchmod(descriptor, mode)  # after chown, which may clear setuid/setgid bits; not subject to umask
    finally:
        os.close(descriptor)


def _set_owner(path: Path | int, uid: int | None, gid: int | None) -> None:
    change_uid = uid is not None and uid != os.geteuid()
    if not change_uid and gid is None:
        return
    try:
        os.chown(path, uid if change_uid and uid is not None else -1, -1 if gid is None else gid)
    except PermissionError as exc:
        raise WriteError(
            f"cannot give the files owner uid={uid} gid={gid}: the fetcher runs as uid {os.geteuid()} "
            f"(groups {sorted(os.getgroups())}) without CAP_CHOWN. Run the fetcher as uid {uid}, "
            "or make the gid one of its groups (the pod's fsGroup)"
        ) from exc


def _top_level_names(files: Mapping[str, tuple[bytes, int]]) -> set[str]:
    return {relative.split("/", 1)[0] for relative in files}


def _link_entries(root: Path, names: set[str]) -> None:
    """Make every top-level name a relative symlink through ..data (kept when already right)."""
    for name in sorted(names):
        link = root / name
        wanted = f"{DATA_LINK}/{name}"
        try:
            if os.readlink(link) == wanted:
                continue
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: exists but is not a symlink
                raise WriteError(f"could not inspect {link}: {_describe_os_error(exc)}") from exc
            raise WriteError(
                f"{link} exists and is not Ferry's symlink; the target directory must be Ferry's own volume"
            ) from exc
        tmp_link = root / f"{DATA_LINK_TMP}.{name}"
        try:
            if os.path.lexists(tmp_link):
                os.unlink(tmp_link)
            os.symlink(wanted, tmp_link)
            os.replace(tmp_link, link)
        except OSError as exc:
            raise WriteError(f"could not link {link}: {_describe_os_error(exc)}") from exc


def _describe_os_error(exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += "; the fetcher must run as a user that can write the volume (the pod's fsGroup)"
    elif exc.errno == errno.ENOSPC:
        reason += "; the volume is full (raise the emptyDir sizeLimit)"
    return reason + where
