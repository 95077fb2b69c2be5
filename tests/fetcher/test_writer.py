"""swap_directory(): the kubelet AtomicWriter layout, no-op swaps, cleanup, ownership, and atomicity under readers."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from fetcher import writer
from fetcher.errors import WriteError
from fetcher.writer import DATA_LINK, read_current, remove_leftovers, swap_directory


def generations(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.name.startswith("..2") and entry.is_dir())


def test_files_appear_behind_data_symlinks_with_their_modes(target: Path) -> None:
    assert swap_directory(target, {"db-pass": (b"one", 0o600), "app/url": (b"two", 0o644)}) is True
    (generation,) = generations(target)
    assert os.readlink(target / DATA_LINK) == generation
    assert os.readlink(target / "db-pass") == "..data/db-pass"
    assert os.readlink(target / "app") == "..data/app"
    assert (target / "db-pass").read_bytes() == b"one"
    assert (target / "app" / "url").read_bytes() == b"two"
    assert stat.S_IMODE((target / "db-pass").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "app" / "url").stat().st_mode) == 0o644
    assert sorted(os.listdir(target)) == sorted([generation, DATA_LINK, "db-pass", "app"])


def test_modes_are_exact_whatever_the_umask(target: Path) -> None:
    previous = os.umask(0o077)
    try:
        swap_directory(target, {"shared": (b"x", 0o644)})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((target / "shared").stat().st_mode) == 0o644


def test_identical_content_causes_no_swap(target: Path) -> None:
    files = {"a": (b"1", 0o644), "b": (b"2", 0o600)}
    swap_directory(target, files)
    before = os.readlink(target / DATA_LINK)
    assert swap_directory(target, dict(files)) is False
    assert os.readlink(target / DATA_LINK) == before
    assert generations(target) == [before]


def test_a_mode_change_alone_swaps(target: Path) -> None:
    swap_directory(target, {"a": (b"1", 0o644)})
    assert swap_directory(target, {"a": (b"1", 0o600)}) is True
    assert stat.S_IMODE((target / "a").stat().st_mode) == 0o600


def test_a_new_set_replaces_the_old_and_removes_old_generations_and_stale_links(target: Path) -> None:
    swap_directory(target, {"a": (b"old", 0o644), "gone": (b"x", 0o644), "dir/f": (b"y", 0o644)})
    first = os.readlink(target / DATA_LINK)
    swap_directory(target, {"a": (b"new", 0o644)})
    second = os.readlink(target / DATA_LINK)
    # The generation just replaced stays for readers that resolved ..data a moment ago...
    assert generations(target) == sorted([first, second])
    assert sorted(os.listdir(target)) == sorted([first, second, DATA_LINK, "a"])
    assert (target / "a").read_bytes() == b"new"
    assert read_current(target) == {"a": (b"new", 0o644)}
    # ...until the next swap, which removes it.
    swap_directory(target, {"a": (b"newer", 0o644)})
    assert first not in generations(target) and len(generations(target)) == 2


def test_leftovers_of_a_crash_are_cleaned_up(target: Path) -> None:
    swap_directory(target, {"a": (b"1", 0o644)})
    (target / "..2020_01_01_00_00_00.000000_orphan").mkdir()
    (target / "..2020_01_01_00_00_00.000000_orphan" / "a").write_bytes(b"half")
    os.symlink("..2020_01_01_00_00_00.000000_orphan", target / "..data_tmp")
    os.symlink("..data/vanished", target / "vanished")
    (target / "user-file").write_bytes(b"not ours")  # never touched
    remove_leftovers(target)
    (generation,) = generations(target)
    assert sorted(os.listdir(target)) == sorted([generation, DATA_LINK, "a", "user-file"])


def test_a_crash_before_the_first_swap_leaves_nothing_visible(target: Path) -> None:
    target.mkdir()
    (target / "..2020_01_01_00_00_00.000000_partial").mkdir()
    assert read_current(target) is None
    assert swap_directory(target, {"a": (b"1", 0o644)}) is True
    assert len(generations(target)) == 1


def test_a_write_failure_leaves_the_previous_set_untouched(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    swap_directory(target, {"a": (b"1", 0o644)})
    before = sorted(os.listdir(target))
    real_write = os.write
    calls = {"n": 0}

    def failing_write(descriptor: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(writer.os, "write", failing_write)
    with pytest.raises(WriteError) as caught:
        swap_directory(target, {"a": (b"2", 0o644), "b": (b"3", 0o644)})
    assert "the volume is full" in str(caught.value)
    assert sorted(os.listdir(target)) == before
    assert (target / "a").read_bytes() == b"1"


def test_group_ownership_follows_the_requested_gid(target: Path) -> None:
    gid = os.getgroups()[0] if os.getgroups() else os.getegid()
    swap_directory(target, {"a": (b"1", 0o640), "d/b": (b"2", 0o640)}, gid=gid)
    assert (target / "a").stat().st_gid == gid
    assert (target / "d").stat().st_gid == gid
    assert (target / "d" / "b").stat().st_gid == gid


def test_owner_is_left_alone_when_it_is_already_ours(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chowned: list[tuple[object, int, int]] = []
    monkeypatch.setattr(writer.os, "chown", lambda path, uid, gid: chowned.append((path, uid, gid)))
    swap_directory(target, {"a": (b"1", 0o600)}, uid=os.geteuid())
    assert chowned == []


def test_an_owner_we_may_not_set_is_a_clear_error_and_nothing_changes(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, where chown always succeeds: simulate the kernel's answer to a non-root fetcher.
    def refuse(path: object, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(writer.os, "chown", refuse)
    with pytest.raises(WriteError) as caught:
        swap_directory(target, {"a": (b"1", 0o600)}, uid=os.geteuid() + 4242, gid=3000)
    assert f"cannot give the files owner uid={os.geteuid() + 4242} gid=3000" in str(caught.value)
    assert "without CAP_CHOWN" in str(caught.value)
    assert os.listdir(target) == []


def test_a_foreign_file_in_the_way_is_not_overwritten(target: Path) -> None:
    target.mkdir()
    (target / "a").write_bytes(b"someone else's")
    with pytest.raises(WriteError) as caught:
        swap_directory(target, {"a": (b"1", 0o644)})
    assert "is not Ferry's symlink" in str(caught.value)
    assert (target / "a").read_bytes() == b"someone else's"


def _generation_files(generation: int, size: int) -> dict[str, tuple[bytes, int]]:
    # Every file of one generation carries the same marker, repeated to a size that takes a while to write.
    marker = f"[gen {generation:05d}]".encode()
    body = (marker * (size // len(marker) + 1))[:size]
    return {f"file-{index}": (body, 0o644) for index in range(4)} | {"sub/inner": (body, 0o644)}


def _marker_of(data: bytes, size: int) -> bytes | None:
    """The generation marker if `data` is one complete file of one generation, else None."""
    if len(data) != size:
        return None
    marker = data[:11]
    return marker if data == (marker * (size // len(marker) + 1))[:size] else None


def test_readers_never_see_a_partial_or_mixed_set_across_many_swaps(target: Path) -> None:
    size = 64 * 1024
    swaps = 150
    swap_directory(target, _generation_files(0, size))
    names = sorted(_generation_files(0, size))
    stop = threading.Event()
    problems: list[str] = []
    consistent_sets = [0]
    single_reads = [0]

    def read_sets() -> None:
        # A reader that needs one generation resolves ..data once and reads everything below it.
        while not stop.is_set():
            try:
                generation = target / os.readlink(target / DATA_LINK)
                contents = [(generation / name).read_bytes() for name in names]
            except FileNotFoundError:
                continue  # the generation was retired while we read: retry, as a kubelet reader would
            markers = {_marker_of(data, size) for data in contents}
            if len(markers) != 1 or None in markers:
                problems.append(f"mixed or partial set: {sorted(map(str, markers))}")
            consistent_sets[0] += 1

    def read_files() -> None:
        # A naive reader opening the user-visible paths one by one: every file it opens is complete.
        while not stop.is_set():
            for name in names:
                try:
                    data = (target / name).read_bytes()
                except FileNotFoundError:
                    # Its path walk went through a generation retired meanwhile. Production swaps are at
                    # least one refresh interval apart and a retired generation lives until the next
                    # swap; here swaps are milliseconds apart, so a descheduled reader can lose that race.
                    # The name itself must never be missing from the current set:
                    if not (target / name).is_file():
                        problems.append(f"{name} was missing")
                    continue
                if _marker_of(data, size) is None:
                    problems.append(f"{name} was partial ({len(data)} bytes)")
                single_reads[0] += 1

    readers = [threading.Thread(target=read_sets), threading.Thread(target=read_files)]
    for reader in readers:
        reader.start()
    try:
        for generation in range(1, swaps + 1):
            assert swap_directory(target, _generation_files(generation, size)) is True
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert problems == []
    assert consistent_sets[0] > 0 and single_reads[0] > 0
    assert read_current(target) == _generation_files(swaps, size)
    assert len(generations(target)) == 2  # the current one and the one it just replaced
