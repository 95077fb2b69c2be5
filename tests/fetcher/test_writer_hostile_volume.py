"""swap_directory() against a volume an app container has tampered with (issue 10, item 9).

Why it exists: the volume is shared with the app, so anything can be in it: a
FIFO where a file was, a symlink to /dev/zero, a huge sparse file, stray
directories in Ferry's hidden names, or a symlink planted between two calls.
Each case runs the real writer in a child process under a memory cap and a
hang guard, so a writer that blocks or reads without bound fails the test
instead of taking the machine with it.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fetcher import writer
from fetcher.errors import WriteError
from fetcher.writer import DATA_LINK, read_current, swap_directory

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous: the child normally needs well under a second; this only stops a hung writer.
HANG_GUARD_SECONDS = 60
CHILD_MEMORY_BYTES = 1024 * 1024 * 1024

_CHILD = """
import json, sys
from fetcher.writer import swap_directory
files = {name: (text.encode(), 0o644) for name, text in json.loads(sys.argv[2]).items()}
print(swap_directory(sys.argv[1], files))
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


def swap_in_child(target: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run swap_directory in a fresh process with a memory cap; fail the test if it hangs."""
    try:
        return subprocess.run(
            [sys.executable, "-c", _CHILD, str(target), json.dumps(files)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_SECONDS,
            preexec_fn=_cap_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"swap_directory did not return within {HANG_GUARD_SECONDS}s: it hangs on the volume")


def current_generation(target: Path) -> Path:
    return target / os.readlink(target / DATA_LINK)


def assert_serves(target: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        assert (target / name).read_text() == text
    resolved = (target / DATA_LINK).resolve()
    assert resolved.parent == target.resolve(), f"..data leads out of the volume, to {resolved}"


@pytest.fixture
def served(target: Path) -> Path:
    """A volume holding Ferry's set {'a': '1', 'b': '2'}."""
    swap_directory(target, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    return target


def test_a_fifo_in_the_current_generation_does_not_hang_the_swap(served: Path) -> None:
    fifo = current_generation(served) / "a"
    fifo.unlink()
    os.mkfifo(fifo)
    done = swap_in_child(served, {"a": "1", "b": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"  # the set on disk was not Ferry's any more: a fresh one replaced it
    assert_serves(served, {"a": "1", "b": "2"})


@pytest.mark.parametrize("planted", ["/dev/zero", "sparse"])
def test_an_endless_or_huge_file_is_never_read(served: Path, planted: str) -> None:
    victim = current_generation(served) / "b"
    victim.unlink()
    if planted == "sparse":
        with open(victim, "wb") as handle:
            handle.truncate(8 * 1024 * 1024 * 1024)  # 8 GiB that take no space
    else:
        victim.symlink_to(planted)
    done = swap_in_child(served, {"a": "1", "b": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert_serves(served, {"a": "1", "b": "2"})
    assert read_current(served) == {"a": (b"1", 0o644), "b": (b"2", 0o644)}


@pytest.mark.parametrize(
    "name", [DATA_LINK, "..data_tmp", "..data_tmp.a", "..2020_01_01_00_00_00.000000_planted", "..stray"]
)
@pytest.mark.parametrize("kind", ["directory", "file", "fifo"])
def test_strays_in_the_hidden_names_are_removed_and_never_block_a_swap(served: Path, name: str, kind: str) -> None:
    stray = served / name
    if stray.is_symlink():
        stray.unlink()
    if kind == "directory":
        (stray / "inner").mkdir(parents=True)
        (stray / "inner" / "file").write_text("x")
    elif kind == "file":
        stray.write_text("x")
    else:
        os.mkfifo(stray)
    for content in ("3", "4"):  # every later swap works, not just the first
        done = swap_in_child(served, {"a": content})
        assert done.returncode == 0, done.stderr[-2000:]
        assert_serves(served, {"a": content})
    names = set(os.listdir(served))
    assert name not in names or (name == DATA_LINK and (served / name).is_symlink())
    assert "b" not in names


def test_data_pointing_out_of_the_volume_is_never_trusted(served: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a").write_bytes(b"planted")
    os.chmod(outside / "a", 0o644)
    (served / DATA_LINK).unlink()
    (served / DATA_LINK).symlink_to(outside)
    assert read_current(served) is None
    assert swap_directory(served, {"a": (b"planted", 0o644)}) is True
    assert_serves(served, {"a": "planted"})
    assert sorted(os.listdir(outside)) == ["a"]


def test_a_symlinked_subdirectory_planted_mid_swap_never_lets_writes_or_chmod_escape(
    target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attacker wins the race: right after the writer creates "tls", it becomes a symlink to a directory outside.
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    os.chmod(outside, 0o700)
    real_mkdir = os.mkdir

    def mkdir_then_swap_for_symlink(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if os.path.basename(path) == "tls":
            os.rmdir(path, dir_fd=dir_fd)
            os.symlink(outside, path, dir_fd=dir_fd)

    monkeypatch.setattr(writer.os, "mkdir", mkdir_then_swap_for_symlink)
    with pytest.raises(WriteError):
        swap_directory(target, {"a": (b"1", 0o644), "tls/ca.crt": (b"ca", 0o644)})
    assert os.listdir(outside) == []
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700
    monkeypatch.setattr(writer.os, "mkdir", real_mkdir)
    # The attack fails the one swap; the next one, unattacked, works and cleans up.
    assert swap_directory(target, {"a": (b"1", 0o644), "tls/ca.crt": (b"ca", 0o644)}) is True
    assert (target / "tls" / "ca.crt").read_bytes() == b"ca"
    assert [name for name in os.listdir(target) if name.startswith("..2")] == [os.readlink(target / DATA_LINK)]


def test_a_symlinked_target_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(WriteError) as caught:
        swap_directory(tmp_path / "link", {"a": (b"1", 0o644)})
    assert "symlink" in str(caught.value)
    assert os.listdir(real) == []


@pytest.mark.parametrize("kind", ["file", "fifo", "dir"])
def test_an_entry_planted_over_a_top_level_link_is_healed_and_nothing_else_is_touched(served: Path, kind: str) -> None:
    (served / "a").unlink()
    if kind == "file":
        (served / "a").write_text("planted")
    elif kind == "fifo":
        os.mkfifo(served / "a")
    else:
        (served / "a").mkdir()
        (served / "a" / "inner").write_text("planted")
    (served / "app-notes").write_text("the app's own file")

    first = swap_in_child(served, {"a": "1", "b": "2"})  # same set: the no-op path heals too
    assert first.returncode == 0, first.stderr
    assert os.readlink(served / "a") == f"{DATA_LINK}/a"
    assert_serves(served, {"a": "1", "b": "2"})

    (served / "b").unlink()
    (served / "b").write_text("planted")
    second = swap_in_child(served, {"a": "new", "b": "2"})  # a new set replaces the planted entry as well
    assert second.returncode == 0, second.stderr
    assert_serves(served, {"a": "new", "b": "2"})
    assert (served / "app-notes").read_text() == "the app's own file"


@pytest.mark.parametrize("name", ["..data", "..ferry-status", "..2026_01_01", ".."])
def test_a_file_named_like_the_swaps_own_entries_is_refused(served: Path, name: str) -> None:
    with pytest.raises(WriteError, match="reserved for the atomic swap"):
        swap_directory(served, {name: (b"x", 0o644), "a": (b"1", 0o644)})
    assert_serves(served, {"a": "1", "b": "2"})
