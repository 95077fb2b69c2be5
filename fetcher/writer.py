"""Atomic file sets in the shared volume, the way the kubelet's atomic writer does it.

An app reads its secrets while the sidecar rotates them, so it must never see a half-written file or a mix of
two sets; and the app can write into the same volume, so nothing found there is trusted.
Details: docs/fetcher.md ("How files are swapped").
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from fetcher.dirfd import (
    CREATE_FLAGS,
    DIR_FLAGS,
    Unexpected,
    describe_os_error,
    exists,
    is_real_dir,
    open_root,
    opened_dir,
    read_exactly,
    readlink,
    remove_any,
    remove_tree,
    visible_names,
    walk_files,
)
from fetcher.errors import WriteError
from fetcher.logs import log
from fetcher.status import STATUS_NAME

DATA_LINK = "..data"
DATA_LINK_TMP = "..data_tmp"
DIR_MODE = 0o755
# read_current() reads at most this much in all: it only serves checks of a set Ferry wrote.
MAX_READ_BYTES = 64 * 1024 * 1024


Files = Mapping[str, tuple[bytes, int]]


def swap_directory(
    target: str | os.PathLike[str],
    files: Files,
    uid: int | None = None,
    gid: int | None = None,
) -> bool:
    """Make `files` the current set in `target`; return False (and touch nothing) when it already is."""
    root = Path(target)
    try:
        with open_root(root, create=True) as root_fd:
            swapped, generation = _swap(root_fd, root, files, uid, gid)
    except OSError as exc:
        raise WriteError(f"could not write the files into {root}: {describe_os_error(exc)}") from exc
    if swapped:
        log.info("swapped files", dir=str(root), generation=generation, files=len(files))
    return swapped


def _swap(root_fd: int, root: Path, files: Files, uid: int | None, gid: int | None) -> tuple[bool, str | None]:
    names = _top_level_names(files)
    _remove_leftovers(root_fd)
    previous = _current_generation(root_fd)
    # Names the served set already owns are Ferry's: whatever was planted there is replaced. Others are refused.
    heal = names & (visible_names(root_fd, previous) if previous is not None else set())
    _refuse_foreign_entries(root_fd, root, names - heal)  # before anything is written: a failure changes nothing
    if previous is not None and _generation_matches(root_fd, previous, files):
        _link_entries(root_fd, root, names, replaced=[], heal=heal)
        return False, previous
    generation = _write_generation(root_fd, files, uid, gid)
    replaced: list[tuple[str, str | None]] = []
    try:
        _point_data_at(root_fd, generation)
        _link_entries(root_fd, root, names, replaced, heal=heal)
    except BaseException:
        _roll_back(root_fd, previous, generation, replaced)
        raise
    _remove_leftovers(root_fd, keep_links=names, keep_generation=previous)
    return True, generation


def _roll_back(root_fd: int, previous: str | None, generation: str, replaced: list[tuple[str, str | None]]) -> None:
    """Put back what was there: every link as it was and ..data on the previous generation (still on disk).

    Best effort: an error here must not hide the one that caused the rollback; the next swap cleans up.
    """
    for name, old_target in reversed(replaced):
        _restore_link(root_fd, name, old_target)
    try:
        if previous is not None:
            _point_data_at(root_fd, previous)
        else:
            remove_any(root_fd, DATA_LINK)
        remove_any(root_fd, DATA_LINK_TMP)
        remove_tree(root_fd, generation)
    except OSError:
        pass


def _point_data_at(root_fd: int, generation: str) -> None:
    remove_any(root_fd, DATA_LINK_TMP)
    os.symlink(generation, DATA_LINK_TMP, dir_fd=root_fd)
    os.replace(DATA_LINK_TMP, DATA_LINK, src_dir_fd=root_fd, dst_dir_fd=root_fd)


def _restore_link(root_fd: int, name: str, old_target: str | None) -> None:
    try:
        if old_target is None:
            os.unlink(name, dir_fd=root_fd)
            return
        tmp_link = f"{DATA_LINK_TMP}.{name}"
        remove_any(root_fd, tmp_link)
        os.symlink(old_target, tmp_link, dir_fd=root_fd)
        os.replace(tmp_link, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    except OSError:
        pass  # best effort: the next swap's cleanup removes what is left


def _refuse_foreign_entries(root_fd: int, root: Path, names: set[str]) -> None:
    """A WriteError if a name of the set is taken by something that is not a symlink (someone's file)."""
    for name in sorted(names):
        try:
            status = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise WriteError(f"could not inspect {root / name}: {describe_os_error(exc)}") from exc
        if not stat.S_ISLNK(status.st_mode):
            raise WriteError(
                f"{root / name} exists and is not Ferry's symlink; the target directory must be Ferry's own "
                "volume (remove it, or choose another directory)"
            )


def read_current(target: str | os.PathLike[str]) -> dict[str, tuple[bytes, int]] | None:
    """The set `..data` points at now (relative path -> (bytes, mode)), or None if there is none.

    None too when the set holds anything but directories and regular files, or more than MAX_READ_BYTES.
    """
    try:
        with open_root(Path(target), create=False) as root_fd:
            generation = _current_generation(root_fd)
            if generation is None:
                return None
            budget = MAX_READ_BYTES
            current: dict[str, tuple[bytes, int]] = {}
            with opened_dir(root_fd, generation) as generation_fd:
                for relative, fd, status in walk_files(generation_fd, ""):
                    if status.st_size > budget:
                        return None
                    budget -= status.st_size
                    current[relative] = (read_exactly(fd, status.st_size), stat.S_IMODE(status.st_mode))
            return current
    except (OSError, Unexpected):
        return None


def has_current_set(target: str | os.PathLike[str]) -> bool:
    """Whether `target` serves a set now (``..data`` leads to a generation directory in it)."""
    try:
        with open_root(Path(target), create=False) as root_fd:
            return _current_generation(root_fd) is not None
    except OSError:
        return False


def remove_leftovers(
    target: str | os.PathLike[str], keep_links: set[str] | None = None, keep_generation: str | None = None
) -> None:
    """Remove what a crash, a shrinking set or a stranger left: see `_remove_leftovers`."""
    try:
        with open_root(Path(target), create=False) as root_fd:
            _remove_leftovers(root_fd, keep_links, keep_generation)
    except OSError as exc:
        raise WriteError(f"could not clean up {target}: {describe_os_error(exc)}") from exc


def _remove_leftovers(root_fd: int, keep_links: set[str] | None = None, keep_generation: str | None = None) -> None:
    """Remove ..data_tmp*, old generations, anything else in Ferry's hidden names, and stale ..data symlinks.

    `keep_links`: the top-level names of the current set; other symlinks into ``..data`` go.
    With None, only symlinks whose target no longer exists are removed.
    `keep_generation`: one retired generation to keep (the one a swap just replaced).
    ``..data`` itself goes when it is not a symlink to a generation directory.
    """
    current = _current_generation(root_fd)
    if current is None:
        remove_any(root_fd, DATA_LINK)
    keep = {current, keep_generation}
    for name in os.listdir(root_fd):
        try:
            if name.startswith(".."):
                ours = name in (DATA_LINK, STATUS_NAME) or (name in keep and is_real_dir(root_fd, name))
                if not ours:
                    remove_any(root_fd, name)
                continue
            target = readlink(root_fd, name)
            if target is None or not target.startswith(DATA_LINK + "/"):
                continue  # not Ferry's: never touched
            stale = not exists(root_fd, name) if keep_links is None else name not in keep_links
            if stale:
                os.unlink(name, dir_fd=root_fd)
        except FileNotFoundError:
            continue


def _current_generation(root_fd: int) -> str | None:
    """The name ..data points at, if it is a symlink to a generation directory right in the volume."""
    target = readlink(root_fd, DATA_LINK)
    if target is None or not _is_generation_name(target) or not is_real_dir(root_fd, target):
        return None
    return target


def _is_generation_name(name: str) -> bool:
    return name.startswith("..") and "/" not in name and name not in ("..", DATA_LINK) and DATA_LINK_TMP not in name


def _generation_matches(root_fd: int, generation: str, files: Files) -> bool:
    """Whether `generation` holds exactly `files`, reading no more bytes than `files` holds."""
    seen = 0
    try:
        with opened_dir(root_fd, generation) as generation_fd:
            for relative, fd, status in walk_files(generation_fd, ""):
                expected = files.get(relative)
                if expected is None or status.st_size != len(expected[0]):
                    return False
                if stat.S_IMODE(status.st_mode) != expected[1] or read_exactly(fd, status.st_size) != expected[0]:
                    return False
                seen += 1
    except (OSError, Unexpected):
        return False
    return seen == len(files)


def _write_generation(root_fd: int, files: Files, uid: int | None, gid: int | None) -> str:
    now_us = time.time_ns() // 1000
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now_us // 1_000_000)) + f".{now_us % 1_000_000:06d}_"
    while True:
        generation = f"..{stamp}{secrets.token_hex(4)}"
        try:
            os.mkdir(generation, 0o700, dir_fd=root_fd)
            break
        except FileExistsError:
            continue
    try:
        with opened_dir(root_fd, generation) as generation_fd:
            _set_mode_and_owner(generation_fd, DIR_MODE, uid, gid)
            directories: dict[str, int] = {"": generation_fd}
            try:
                for relative, (content, mode) in sorted(files.items()):
                    parent, _, name = relative.rpartition("/")
                    parent_fd = _make_dirs(directories, parent, uid, gid)
                    _write_file(parent_fd, name, content, mode, uid, gid)
            finally:
                for path, fd in directories.items():
                    if path:
                        os.close(fd)
    except BaseException:
        remove_tree(root_fd, generation)
        raise
    return generation


def _make_dirs(directories: dict[str, int], path: str, uid: int | None, gid: int | None) -> int:
    """The fd of `path` inside the generation, creating what is missing (fds cached in `directories`)."""
    if path in directories:
        return directories[path]
    parent, _, name = path.rpartition("/")
    parent_fd = _make_dirs(directories, parent, uid, gid)
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    directories[path] = fd
    _set_mode_and_owner(fd, DIR_MODE, uid, gid)
    return fd


def _write_file(dir_fd: int, name: str, content: bytes, mode: int, uid: int | None, gid: int | None) -> None:
    descriptor = os.open(name, CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(content)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        _set_mode_and_owner(descriptor, mode, uid, gid)
    finally:
        os.close(descriptor)


def _set_mode_and_owner(fd: int, mode: int, uid: int | None, gid: int | None) -> None:
    """Owner first, then mode: chown may clear setuid/setgid bits; fchmod is not subject to umask."""
    change_uid = uid is not None and uid != os.geteuid()
    if change_uid or gid is not None:
        try:
            os.chown(fd, uid if change_uid and uid is not None else -1, -1 if gid is None else gid)
        except PermissionError as exc:
            raise WriteError(
                f"cannot give the files owner uid={uid} gid={gid}: the fetcher runs as uid {os.geteuid()} "
                f"(groups {sorted(os.getgroups())}) without CAP_CHOWN. Run the fetcher as uid {uid}, "
                "or make the gid one of its groups (the pod's fsGroup)"
            ) from exc
    os.fchmod(fd, mode)


def _top_level_names(files: Files) -> set[str]:
    """The names the set owns in the volume; the swap's own hidden names ("..*") are never among them."""
    names = {relative.split("/", 1)[0] for relative in files}
    reserved = sorted(name for name in names if name.startswith("..") or name in ("", "."))
    if reserved:
        raise WriteError(
            f"the file name {reserved[0]!r} is reserved for the atomic swap (names starting with '..'); "
            "choose another name"
        )
    return names


def _link_entries(
    root_fd: int, root: Path, names: set[str], replaced: list[tuple[str, str | None]], *, heal: set[str]
) -> None:
    """Make every top-level name a relative symlink through ..data (kept when already right).

    Appends (name, previous symlink target or None) to `replaced` before changing a name, for a rollback.
    `heal`: names the served set owns, where a planted file, FIFO or directory is replaced; others are refused.
    """
    for name in sorted(names):
        wanted = f"{DATA_LINK}/{name}"
        old_target: str | None = None
        try:
            old_target = os.readlink(name, dir_fd=root_fd)
            if old_target == wanted:
                continue
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: exists but is not a symlink
                raise WriteError(f"could not inspect {root / name}: {describe_os_error(exc)}") from exc
            if name not in heal:
                raise WriteError(
                    f"{root / name} exists and is not Ferry's symlink; the target directory must be Ferry's own "
                    "volume (remove it, or choose another directory)"
                ) from exc
            log.warning("replacing an entry planted at a name of the set", dir=str(root), name=name)
            if is_real_dir(root_fd, name):
                remove_tree(root_fd, name)  # a rename cannot replace a directory; never follows a link out
        tmp_link = f"{DATA_LINK_TMP}.{name}"
        replaced.append((name, old_target))
        try:
            remove_any(root_fd, tmp_link)
            os.symlink(wanted, tmp_link, dir_fd=root_fd)
            os.replace(tmp_link, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        except OSError as exc:
            raise WriteError(f"could not link {root / name}: {describe_os_error(exc)}") from exc
