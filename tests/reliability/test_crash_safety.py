"""kill -9 in the middle of a swap, and readers racing 1,000+ rotations, never expose a partial or mixed set.

Why it exists: the sidecar can be OOM-killed or evicted at any instant, and the
app reads its secrets while they rotate. `fetcher.writer` claims the kubelet
AtomicWriter's guarantees; these tests try to break them with the real
`swap_directory` in a real separate process:

- kill loop: a writer process swapping self-checking file sets back to back
  is SIGKILLed at a random moment, the directory is inspected (one complete
  set of one generation, reachable through its links), then the next start's
  cleanup must remove every leftover. Default run: 30 kills; ``-m slow``:
  300 (bench/kill_swap.py does more, and kills the real sidecar too).
- concurrent readers: while a writer process makes 1,000 rotations (10,000
  under ``-m slow``), one thread reads whole sets the documented way (resolve
  ``..data`` once) and must never see a torn file, a mixed set or time going
  backwards; another opens each top-level path and must never see a torn file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.support import swap as swaplib

from .conftest import record_result


def _kill_and_check(tmp_path: Path, iterations: int, seed: int) -> swaplib.KillReport:
    report = swaplib.kill_loop(tmp_path / "vol", iterations, seed=seed)
    assert report.iterations == iterations
    assert report.inconsistent == []
    assert report.not_cleaned == []
    # The test is only worth something if kills really landed inside swaps.
    assert report.mid_swap > 0, "no kill left a trace of an unfinished swap: the kills never hit one"
    return report


def test_kill_9_during_swaps_leaves_a_whole_set_and_restart_cleans(tmp_path: Path) -> None:
    report = _kill_and_check(tmp_path, iterations=30, seed=1)
    record_result(
        "crash_safety",
        "kill -9 writer (default run)",
        {"kills": report.iterations, "mid_swap": report.mid_swap, "inconsistent": 0, "not_cleaned": 0},
    )


@pytest.mark.slow
def test_kill_9_during_swaps_hundreds_of_times(tmp_path: Path) -> None:
    report = _kill_and_check(tmp_path, iterations=300, seed=2)
    record_result(
        "crash_safety",
        "kill -9 writer (slow run)",
        {"kills": report.iterations, "mid_swap": report.mid_swap, "inconsistent": 0, "not_cleaned": 0},
    )


def _race_readers(tmp_path: Path, rotations: int) -> swaplib.ReaderReport:
    target = tmp_path / "vol"
    swaplib.swap_directory(target, swaplib.file_set(0))
    context = swaplib.forkserver()
    progress = context.Value("q", -1, lock=False)
    writer = context.Process(target=swaplib.swap_forever, args=(str(target), 1, progress, rotations), daemon=True)
    report = swaplib.ReaderReport()
    stop = threading.Event()
    readers = [
        threading.Thread(target=swaplib.read_sets_until, args=(target, stop, report), daemon=True),
        threading.Thread(target=swaplib.read_files_until, args=(target, stop, report), daemon=True),
    ]
    for reader in readers:
        reader.start()
    writer.start()
    writer.join(timeout=240)
    stop.set()
    for reader in readers:
        reader.join(timeout=10)
    assert writer.exitcode == 0, f"writer did not finish its {rotations} rotations (exit {writer.exitcode})"
    assert progress.value == rotations
    assert report.violations == []
    # The readers really raced the writer: they saw many generations, not one.
    assert report.set_reads > 100 and len(report.generations) > 20
    final = swaplib.inspect_dir(target)
    assert final.problems == [] and final.generation == rotations
    # At most the one generation the writer keeps for late readers, and it is whole.
    assert final.tmp_links == [] and len(final.retired) <= 1
    for name in final.retired:
        assert swaplib.check_generation_dir(target / name)[1] == []
    return report


def _record_readers(label: str, rotations: int, report: swaplib.ReaderReport) -> None:
    record_result(
        "concurrent_reader",
        label,
        {
            "rotations": rotations,
            "whole-set reads": report.set_reads,
            "generations seen": len(report.generations),
            "single-file reads": report.file_reads,
            "ENOENT retries (set reader)": report.retries,
            "top-level ENOENT": report.top_level_missing,
            "violations": len(report.violations),
        },
    )


def test_readers_never_see_a_partial_or_mixed_set_across_1000_rotations(tmp_path: Path) -> None:
    report = _race_readers(tmp_path, rotations=1000)
    _record_readers("default run", 1000, report)


@pytest.mark.slow
def test_readers_across_10000_rotations(tmp_path: Path) -> None:
    report = _race_readers(tmp_path, rotations=10_000)
    _record_readers("slow run", 10_000, report)


def test_checker_catches_a_torn_and_a_mixed_set(tmp_path: Path) -> None:
    """The post-mortem must be able to fail: hand it a torn file and a mixed set."""
    target = tmp_path / "vol"
    swaplib.swap_directory(target, swaplib.file_set(5))
    assert swaplib.inspect_dir(target).problems == []
    generation_dir = target / os.readlink(target / "..data")
    victim = generation_dir / "big.bin"
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes()[:1000])
    assert any("checksum" in problem for problem in swaplib.inspect_dir(target).problems)
    victim.write_bytes(swaplib.file_content(6, "big.bin"))
    assert any("mixed generations" in problem for problem in swaplib.inspect_dir(target).problems)
    (generation_dir / "extra").write_bytes(b"x")
    assert any("the set holds" in problem for problem in swaplib.inspect_dir(target).problems)
